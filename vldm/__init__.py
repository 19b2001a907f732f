"""vldm package."""

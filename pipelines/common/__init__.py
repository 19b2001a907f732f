"""What every command shares: config loading, the data config, run folders and devices, processes, metrics."""

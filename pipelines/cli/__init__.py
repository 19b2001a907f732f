"""The ``sparsefusion`` command line: one subcommand per job, each importing only its own module."""

from pipelines.cli.main import main

__all__ = ["main"]

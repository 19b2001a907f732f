"""pipelines package: the ``sparsefusion`` command line and everything it runs."""

__version__ = "0.1.0"

"""The evaluation harness: the method registry and adapters, ``evaluate`` and ``compare``."""

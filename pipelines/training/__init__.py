"""Training: the shared engine (trainer, its settings, log, EMA, schedules, trackers) and one module per model."""

"""Learning-rate schedules of the trainer, as a function of the step (so a resumed run continues exactly)."""

from __future__ import annotations

import math

LR_SCHEDULES = ("constant", "cosine")


def lr_factor(schedule: str, min_ratio: float, steps: int, step: int) -> float:
    """The learning-rate multiplier at optimizer step ``step`` (0-based) of ``steps``: constant, or a cosine to ``min_ratio``."""
    if schedule == "constant":
        return 1.0
    progress = min(max(step / max(steps, 1), 0.0), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

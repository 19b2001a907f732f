"""The training loop's settings (``train.*`` of every trainer's config) and their checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from pipelines.training import trackers
from pipelines.training.lr_schedule import LR_SCHEDULES
from scenes.errors import UserError

MIXED_PRECISION = ("no", "fp16", "bf16")


@dataclass
class TrainConfig:
    """Optimisation, checkpoints and logging of a training run (shared by every train-* command)."""

    RENAMED: ClassVar[dict[str, str]] = {"sample_every": "preview_every"}

    steps: int = 1000
    """Optimizer steps in total (a resumed run counts the steps done before it)."""
    lr: float = 1e-4
    """Adam learning rate (the peak of the schedule)."""
    lr_schedule: str = "constant"
    """constant, or cosine: decay from lr to lr·lr_min_ratio over the run's steps (set from the step, so resumes exactly)."""
    lr_min_ratio: float = 0.1
    """Final learning rate of the cosine schedule as a fraction of lr."""
    batch_size: int = 1
    """Examples per process per micro-step (one sequence per example for view-conditioned models)."""
    grad_accum: int = 1
    """Micro-steps whose gradients are accumulated into one optimizer step."""
    mixed_precision: str = "no"
    """no, fp16 (CUDA only) or bf16."""
    ema: bool = False
    """Keep an exponential moving average of the weights; the final model is saved with it."""
    ema_decay: float = 0.999
    """Largest EMA decay (diffusers EMAModel ramps it up as (1+n)/(10+n))."""
    save_every: int = 500
    """Save a checkpoint every N optimizer steps (0: only at the end)."""
    keep_last: int = 2
    """Checkpoints kept: the newest N."""
    log_every: int = 10
    """Write a line to log.jsonl every N optimizer steps."""
    preview_every: int = 0
    """Write a preview image (``samples/step-N.png``: the model's output on two training views) every N optimizer steps (0: never)."""
    seed: int = 0
    """Seed of the data order and of each process's random numbers (seed + process index)."""
    num_workers: int = 0
    """DataLoader worker processes per training process."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""
    resume: str | None = None
    """'latest' (the newest complete checkpoint in the output folder, if any) or a checkpoint folder."""
    init_from: str | None = None
    """A saved ``model/`` folder to start from: weights only (optimizer, step and data order start fresh);
    a checkpoint found by ``resume`` still wins over it."""
    val_every: int = 0
    """Log the fixed validation loss (same examples, t and noise every time) every N optimizer steps (0: never)."""
    log_with: str | None = None
    """Also log to tensorboard (under <out>/tensorboard) or wandb: log.jsonl's scalars and the sample grids."""


def validate(cfg: TrainConfig) -> None:
    """Refuse settings that cannot work, naming the key."""
    checks = [
        (cfg.steps >= 1, "train.steps must be >= 1"), (cfg.lr > 0, "train.lr must be > 0"),
        (cfg.batch_size >= 1, "train.batch_size must be >= 1"), (cfg.grad_accum >= 1, "train.grad_accum must be >= 1"),
        (cfg.mixed_precision in MIXED_PRECISION, f"train.mixed_precision must be one of {', '.join(MIXED_PRECISION)}"),
        (0 < cfg.ema_decay < 1, "train.ema_decay must be in (0, 1)"), (cfg.save_every >= 0, "train.save_every must be >= 0"),
        (cfg.keep_last >= 1, "train.keep_last must be >= 1"), (cfg.log_every >= 1, "train.log_every must be >= 1"),
        (cfg.preview_every >= 0, "train.preview_every must be >= 0"), (cfg.num_workers >= 0, "train.num_workers must be >= 0"),
        (cfg.max_grad_norm >= 0, "train.max_grad_norm must be >= 0"),
        (cfg.lr_schedule in LR_SCHEDULES, f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}"),
        (0 <= cfg.lr_min_ratio <= 1, "train.lr_min_ratio must be in [0, 1]"),
        (cfg.val_every >= 0, "train.val_every must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    trackers.check_name(cfg.log_with)
    if cfg.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise UserError("train.mixed_precision=fp16 needs CUDA; use bf16 or no on this machine")

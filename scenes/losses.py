"""Losses shared by the training and distillation loops."""

from __future__ import annotations

from torch import Tensor


def pseudo_huber(x: Tensor, y: Tensor, delta: float = 0.1, weight: Tensor | None = None) -> Tensor:
    """Mean pseudo-Huber loss δ·(√(1 + ((x−y)/δ)²) − 1) (PyTorch3D's ``huber``), optionally weighted.

    ``weight`` broadcasts against x; the mean is over the weight's support.
    """
    loss = ((1 + ((x - y) / delta) ** 2).clamp_min(1e-4).sqrt() - 1) * delta
    if weight is None:
        return loss.mean()
    w = weight.expand_as(loss)
    return (loss * w).sum() / w.sum().clamp_min(1e-8)

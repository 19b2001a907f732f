"""One scene's result row, the same type for ``evaluate`` (and so ``compare``) and ``reconstruct``.

The row is written as flat JSON (``scenes/<name>.json`` of an evaluation, ``<scene>/metrics.json``
of a reconstruction): the identity fields, then the command's own fields (``extras``), then each
metric's mean over the targets, then ``per_target``; :func:`pipelines.harness.evaluate.scalar_metrics`
and the summaries read it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from pipelines.common.metrics import Unavailable, to_jsonable


@dataclass
class SceneRow:
    """A scene's identity, cost, command-specific fields and metrics (means and per target)."""

    scene: str
    inputs: list[int]  # input frame numbers
    seconds: float
    targets: list[int] | None = None  # target frame numbers; None without ground truth
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. index, mode, iterations, unet_evaluations
    metrics: dict[str, Any] = field(default_factory=dict)  # metric -> mean over targets, or Unavailable
    per_target: dict[str, list[float]] = field(default_factory=dict)  # metric -> one value per target

    def measure(self, per_image: dict[str, torch.Tensor | Unavailable]) -> "SceneRow":
        """Fill the metrics from :meth:`MetricSuite.per_image`'s (B,) tensors; returns self."""
        self.metrics = {k: v.mean().item() if torch.is_tensor(v) else v for k, v in per_image.items()}
        self.per_target = {k: v.tolist() for k, v in per_image.items() if torch.is_tensor(v)}
        return self

    def to_json(self) -> dict[str, Any]:
        """The flat JSON record."""
        out: dict[str, Any] = {"scene": self.scene, "seconds": self.seconds, "inputs": self.inputs}
        if self.targets is not None:
            out["targets"] = self.targets
        out.update(to_jsonable(self.extras))
        out.update(to_jsonable(self.metrics))
        if self.per_target:
            out["per_target"] = self.per_target
        return out

"""What distillation needs from a prior: the teacher protocol. ``distill`` never imports ``vldm``.

SparseFusion's multi-step distillation, SDS, or any other prior plugs into the same loop by
implementing these calls on cameras the loop renders (``sds_loss`` only for ``mode=sds``).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from scenes.cameras import Cameras


class Teacher(Protocol):
    """A prior over images at cameras, used as a regression target for rendered views."""

    unet_evaluations: int  # denoiser calls so far (the cost the benchmarks count)

    def prepare(self, cameras: Cameras) -> None:
        """Cache whatever conditioning these cameras need (e.g. EFT features), once."""
        ...

    def bootstrap(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Deterministic targets for prepared cameras ``index`` (B,): RGB (B,3,H,W) and mask (B,1,H,W)."""
        ...

    def denoise(self, images: Tensor, index: Tensor, t: Tensor,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Noise renders (B,3,H,W) to levels t ∈ (0, 1) (B,) and denoise them: x̂0 (B,3,H,W), weight 1 − ᾱ_t (B,).

        No gradient flows through the teacher: x̂0 is a target.
        """
        ...

    def sds_loss(self, images: Tensor, index: Tensor, t: Tensor,
                 generator: torch.Generator | None = None) -> Tensor:
        """Score distillation: a scalar whose gradient w.r.t. the renders (B,3,H,W) is the SDS gradient."""
        ...

"""An exponential moving average of a module's floating-point buffers, to go with EMA weights.

diffusers' ``EMAModel`` averages parameters only; a model saved with EMA weights would otherwise
carry the live model's buffers (BatchNorm running statistics gathered under other weights).
The average uses the same decay as the parameters at every step (as timm's ``ModelEmaV2``,
which averages the whole state dict); integer buffers (``num_batches_tracked``) stay live.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class BufferEMA:
    """Shadow copies of ``module``'s floating-point buffers, moved towards the live ones by :meth:`step`."""

    def __init__(self, module: nn.Module):
        self.shadow = {n: b.detach().clone() for n, b in module.named_buffers() if b.is_floating_point()}

    @torch.no_grad()
    def step(self, module: nn.Module, decay: float) -> None:
        """shadow <- decay·shadow + (1 − decay)·live, for every tracked buffer."""
        for n, b in module.named_buffers():
            if n in self.shadow:
                self.shadow[n].mul_(decay).add_(b.detach().to(self.shadow[n]), alpha=1 - decay)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Write the shadow buffers into ``module`` (a copy holding the EMA weights)."""
        buffers = dict(module.named_buffers())
        for n, v in self.shadow.items():
            buffers[n].copy_(v)

    def save(self, file: Path) -> None:
        """The shadow buffers as safetensors (nothing is written when there are none)."""
        if self.shadow:
            from safetensors.torch import save_file

            save_file({n: v.detach().cpu().contiguous() for n, v in self.shadow.items()}, str(file))

    def load(self, file: Path) -> None:
        """Shadow buffers from :meth:`save`'s file; without one (older checkpoints) the live buffers stay."""
        if not self.shadow or not file.is_file():
            return
        from safetensors.torch import load_file

        saved = load_file(str(file))
        for n, v in self.shadow.items():
            if n in saved:
                v.copy_(saved[n])

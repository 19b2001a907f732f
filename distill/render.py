"""Rendering a field to whole images through a sampler, in ray chunks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from scenes.cameras import Cameras

from .sampler import DenseSampler, OccGridSampler

Sampler = DenseSampler | OccGridSampler


def render_images(field: nn.Module, cameras: Cameras, sampler: Sampler, chunk: int = 4096,
                  stratified: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """RGB (N, 3, H, W), depth (N, 1, H, W) and opacity (N, 1, H, W) of full images (differentiable)."""
    dev = next(field.parameters()).device
    o, d = cameras.to(dev).rays()
    o, d = o.reshape(-1, 3).float(), d.reshape(-1, 3).float()
    parts = [sampler.render(field, o[i:i + chunk], d[i:i + chunk], stratified=stratified)
             for i in range(0, o.shape[0], chunk)]
    N, H, W = len(cameras), cameras.height, cameras.width
    img = lambda key, c: torch.cat([getattr(p, key) for p in parts]).reshape(N, H, W, c).permute(0, 3, 1, 2)
    return img("rgb", 3), img("depth", 1), img("opacity", 1)


@torch.no_grad()
def render_views(field: nn.Module, cameras: Cameras, sampler: Sampler, chunk: int = 4096,
                 batch: int = 4) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`render_images` without gradients and with deterministic samples, ``batch`` views at a time."""
    parts = [render_images(field, cameras[list(range(i, min(i + batch, len(cameras))))], sampler, chunk)
             for i in range(0, len(cameras), batch)]
    return tuple(torch.cat(p) for p in zip(*parts))

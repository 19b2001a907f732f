"""Rendering a field to whole images through a sampler, in ray chunks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from scenes.cameras import Cameras
from scenes.render import render_image_chunks

from .sampler import DenseSampler, OccGridSampler

Sampler = DenseSampler | OccGridSampler


def render_images(field: nn.Module, cameras: Cameras, sampler: Sampler, chunk: int = 4096,
                  stratified: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """RGB (N, 3, H, W), depth (N, 1, H, W) and opacity (N, 1, H, W) of full images (differentiable)."""
    dev = next(field.parameters()).device

    def chunk_fn(o: Tensor, d: Tensor) -> dict[str, Tensor]:
        r = sampler.render(field, o, d, stratified=stratified)
        return {"rgb": r.rgb, "depth": r.depth, "opacity": r.opacity}

    images = render_image_chunks(cameras.to(dev), chunk_fn, chunk)
    return images["rgb"], images["depth"], images["opacity"]


@torch.no_grad()
def render_views(field: nn.Module, cameras: Cameras, sampler: Sampler, chunk: int = 4096,
                 batch: int = 4) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`render_images` without gradients and with deterministic samples, ``batch`` views at a time."""
    parts = [render_images(field, cameras[list(range(i, min(i + batch, len(cameras))))], sampler, chunk)
             for i in range(0, len(cameras), batch)]
    return tuple(torch.cat(p) for p in zip(*parts))

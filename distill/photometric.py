"""Rendering a field to images, and fitting it to posed views with no teacher (photometric mode).

Photometric fitting proves the field, renderer and cameras on data with many views, and is
useful on its own to users who have them. Loss per ray batch: pseudo-Huber RGB + pseudo-Huber
silhouette against the mask + 1e-3 · opacity regulariser (the input-view step of SparseFusion).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm import tqdm

from scenes.cameras import Cameras
from scenes.co3d import Views
from scenes.losses import pseudo_huber
from scenes.render import render_rays


@dataclass
class PhotometricConfig:
    """Optimisation of a field against posed, masked views."""

    iters: int = 2000
    """Optimizer steps."""
    rays: int = 1024
    """Rays per step, drawn uniformly from every valid pixel of every view."""
    lr_grid: float = 5e-3
    """Adam learning rate of the hash tables."""
    lr_mlp: float = 5e-4
    """Adam learning rate of the MLP."""
    n_coarse: int = 64
    """Stratified samples per ray."""
    n_fine: int = 32
    """Importance samples per ray."""
    huber_delta: float = 0.1
    """Pseudo-Huber scale of the RGB and silhouette terms."""
    opacity_weight: float = 1e-3
    """Weight of mean √(opacity² + 0.01)."""


def reconstruction_loss(rgb: Tensor, opacity: Tensor, target: Tensor, mask: Tensor, delta: float,
                        opacity_weight: float) -> Tensor:
    """Pseudo-Huber RGB + pseudo-Huber silhouette + opacity_weight · mean √(opacity² + 0.01) (any shapes)."""
    return (pseudo_huber(rgb, target, delta) + pseudo_huber(opacity, mask, delta)
            + opacity_weight * torch.sqrt(opacity**2 + 0.01).mean())


def field_parameter_groups(field: nn.Module, lr_grid: float, lr_mlp: float) -> list[dict]:
    """Adam groups: hash tables at ``lr_grid``, everything else at ``lr_mlp``."""
    grid = list(field.encoding.parameters())
    ids = {id(p) for p in grid}
    return [{"params": grid, "lr": lr_grid},
            {"params": [p for p in field.parameters() if id(p) not in ids], "lr": lr_mlp}]


def render_images(field: nn.Module, cameras: Cameras, n_coarse: int = 64, n_fine: int = 32,
                  chunk: int = 4096, stratified: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """RGB (N, 3, H, W), depth (N, 1, H, W) and opacity (N, 1, H, W) of full images (differentiable)."""
    o, d = cameras.rays()
    o, d = o.reshape(-1, 3).float(), d.reshape(-1, 3).float()
    parts = [render_rays(field, o[i:i + chunk], d[i:i + chunk], n_coarse, n_fine, stratified=stratified)
             for i in range(0, o.shape[0], chunk)]
    N, H, W = len(cameras), cameras.height, cameras.width
    img = lambda key, c: torch.cat([getattr(p, key) for p in parts]).reshape(N, H, W, c).permute(0, 3, 1, 2)
    return img("rgb", 3), img("depth", 1), img("opacity", 1)


@torch.no_grad()
def render_views(field: nn.Module, cameras: Cameras, n_coarse: int = 64, n_fine: int = 32,
                 chunk: int = 4096) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`render_images` without gradients, deterministic samples (evaluation, exports)."""
    return render_images(field, cameras, n_coarse, n_fine, chunk)


def fit_photometric(field: nn.Module, views: Views, cfg: PhotometricConfig = PhotometricConfig(),
                    generator: torch.Generator | None = None, progress: bool = True) -> list[float]:
    """Fit a field to views (images, masks, cameras, valid region); returns the loss per step."""
    dev = next(field.parameters()).device
    o, d = views.cameras.to(dev).rays()
    o, d = o.reshape(-1, 3).float(), d.reshape(-1, 3).float()
    rgb = views.images.to(dev).permute(0, 2, 3, 1).reshape(-1, 3)
    mask = views.masks.to(dev).permute(0, 2, 3, 1).reshape(-1)
    pool = views.valid.to(dev).reshape(-1).nonzero()[:, 0]
    opt = torch.optim.Adam(field_parameter_groups(field, cfg.lr_grid, cfg.lr_mlp), eps=1e-15)
    losses = []
    for _ in tqdm(range(cfg.iters), desc="photometric fit", disable=not progress):
        pick = pool[torch.randint(len(pool), (cfg.rays,), generator=generator).to(dev)]
        out = render_rays(field, o[pick], d[pick], cfg.n_coarse, cfg.n_fine, stratified=True)
        loss = reconstruction_loss(out.rgb, out.opacity[:, 0], rgb[pick], mask[pick], cfg.huber_delta,
                                   cfg.opacity_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses

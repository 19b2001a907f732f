"""Fitting a field to posed views with no teacher (photometric mode), and what every fit shares.

Photometric fitting proves the field, renderer and cameras on data with many views, and is
useful on its own to users who have them. Loss per ray batch: pseudo-Huber RGB + pseudo-Huber
silhouette against the mask + 1e-3 · opacity regulariser (the input-view step of SparseFusion).
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Callable

import torch
from torch import Tensor, nn
from tqdm import tqdm

from scenes.co3d import Views
from scenes.losses import pseudo_huber

from .render import Sampler
from .sampler import SamplerConfig, make_sampler


@dataclass
class FitConfig:
    """What every way of fitting a field shares: optimizer, losses, sampler."""

    lr_grid: float = 5e-3
    """Adam learning rate of the hash tables."""
    lr_mlp: float = 5e-4
    """Adam learning rate of the MLP."""
    huber_delta: float = 0.1
    """Pseudo-Huber scale of the RGB and silhouette terms."""
    opacity_weight: float = 1e-3
    """Weight of the opacity regulariser mean √(opacity² + 0.01)."""
    sampler: SamplerConfig = dc_field(default_factory=SamplerConfig)
    """Ray sampler (dense or occgrid) and its sample counts."""


@dataclass
class PhotometricConfig(FitConfig):
    """Optimisation of a field against posed, masked views (no teacher)."""

    iters: int = 2000
    """Optimizer steps."""
    rays: int = 1024
    """Rays per step, drawn uniformly from every valid pixel of every view."""


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


def make_optimizer(field: nn.Module, cfg: FitConfig) -> torch.optim.Optimizer:
    """Adam over the field (grid and MLP learning rates), as every fit uses it."""
    return torch.optim.Adam(field_parameter_groups(field, cfg.lr_grid, cfg.lr_mlp), eps=1e-15)


def fit_photometric(field: nn.Module, views: Views, cfg: PhotometricConfig = PhotometricConfig(), seed: int = 0,
                    start: int = 0, optimizer: torch.optim.Optimizer | None = None, sampler: Sampler | None = None,
                    progress: bool = True, on_iteration: Callable[[int, dict], None] | None = None,
                    generator: torch.Generator | None = None) -> list[float]:
    """Fit a field to views (images, masks, cameras, valid region) from step ``start``; losses per step.

    ``on_iteration(steps_done, logs)`` runs after every step (checkpoints, logging); ``generator``
    draws the rays (default: one seeded by ``seed`` and ``start``; pass a resumed one to continue it).
    A given ``sampler`` must have been prepared (``sampler.prepare(views)``).
    """
    dev = next(field.parameters()).device
    o, d = views.cameras.to(dev).rays()
    o, d = o.reshape(-1, 3).float(), d.reshape(-1, 3).float()
    rgb = views.images.to(dev).permute(0, 2, 3, 1).reshape(-1, 3)
    mask = views.masks.to(dev).permute(0, 2, 3, 1).reshape(-1)
    pool = views.valid.to(dev).reshape(-1).nonzero()[:, 0]
    opt = optimizer or make_optimizer(field, cfg)
    if sampler is None:  # a given sampler is prepared by its owner, once per scene
        sampler = make_sampler(cfg.sampler, dev)
        sampler.prepare(views)
    g = generator if generator is not None else torch.Generator().manual_seed(seed * 100003 + start)
    losses = []
    bar = tqdm(range(start, cfg.iters), initial=start, total=cfg.iters, desc="photometric fit", disable=not progress)
    for step in bar:
        sampler.update(field, step)
        pick = pool[torch.randint(len(pool), (cfg.rays,), generator=g).to(dev)]
        out = sampler.render(field, o[pick], d[pick], stratified=True)
        loss = reconstruction_loss(out.rgb, out.opacity[:, 0], rgb[pick], mask[pick], cfg.huber_delta,
                                   cfg.opacity_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {step}")
        if step % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if on_iteration is not None:
            on_iteration(step + 1, {"loss": losses[-1]})
    return losses

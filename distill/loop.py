"""The distillation loop (SparseFusion's recipe): fit an instance field to input views and a teacher.

Each iteration:

1. input-view step: one input view rendered at ``render_scale``; pseudo-Huber RGB + pseudo-Huber
   silhouette against its mask + ``opacity_weight`` · mean √(opacity² + 0.01);
2. fusion step on a random prepared camera, rendered at ``render_scale`` and upsampled:
   during the bootstrap, regress the teacher's deterministic RGB and mask; afterwards draw
   t ~ U(t_min, t_max), let the teacher denoise the render to x̂0 and minimise
   (1 − ᾱ_t)·L1(render, x̂0) + ``perceptual_weight``·perceptual(render, x̂0).

``reuse_target`` keeps a denoised target for several iterations (fewer teacher calls);
``views_per_step`` renders several cameras per fusion step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from scenes.cameras import Cameras
from scenes.co3d import Views
from scenes.losses import pseudo_huber

from .photometric import field_parameter_groups, reconstruction_loss, render_images
from .teacher import Teacher

Perceptual = Callable[[Tensor, Tensor], Tensor]  # images (B,3,H,W) in [0,1] -> (B,) distances


@dataclass
class DistillConfig:
    """The distillation schedule (paper preset: 3000 iterations, bootstrap for the first 1000)."""

    iters: int = 3000
    """Iterations (each one input-view step and one fusion step)."""
    bootstrap_iters: int = 1000
    """Fusion steps regress the teacher's deterministic RGB up to this iteration."""
    lr_grid: float = 5e-3
    """Adam learning rate of the hash tables."""
    lr_mlp: float = 5e-4
    """Adam learning rate of the MLP."""
    render_scale: float = 0.5
    """Renders are made at this fraction of the image size and upsampled."""
    n_coarse: int = 64
    """Stratified samples per ray."""
    n_fine: int = 64
    """Importance samples per ray."""
    t_min: float = 0.02
    """Smallest noise level drawn for a fusion step."""
    t_max: float = 0.98
    """Largest noise level drawn for a fusion step."""
    perceptual_weight: float = 0.1
    """Weight of the perceptual (LPIPS-VGG) term; 0 or no perceptual metric switches it off."""
    huber_delta: float = 0.1
    """Pseudo-Huber scale."""
    opacity_weight: float = 1e-3
    """Weight of the opacity regulariser of the input-view step."""
    reuse_target: int = 1
    """Use each denoised target for this many fusion steps (1: a fresh one every step)."""
    views_per_step: int = 1
    """Cameras rendered per fusion step."""


@dataclass
class DistillState:
    """What the loop carries between iterations (and what a checkpoint must hold to resume)."""

    iteration: int = 0
    target: Tensor | None = None  # cached x̂0 for reuse, (B, 3, H, W)
    target_index: Tensor | None = None
    target_weight: Tensor | None = None
    target_age: int = 0


def _render(field: nn.Module, cameras: Cameras, cfg: DistillConfig) -> tuple[Tensor, Tensor]:
    """RGB (B, 3, H, W) and opacity (B, 1, H, W) at the cameras' full size, rendered at render_scale."""
    small = cameras.scaled(cfg.render_scale) if cfg.render_scale != 1 else cameras
    rgb, _, opacity = render_images(field, small, cfg.n_coarse, cfg.n_fine, stratified=True)
    if small.height != cameras.height:
        size = (cameras.height, cameras.width)
        rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False)
        opacity = F.interpolate(opacity, size=size, mode="bilinear", align_corners=False)
    return rgb, opacity


def input_view_loss(field: nn.Module, views: Views, i: int, cfg: DistillConfig) -> Tensor:
    """Reconstruction loss of input view ``i`` (rendered at render_scale, compared at that size)."""
    cam = views.cameras[[i]]
    small = cam.scaled(cfg.render_scale) if cfg.render_scale != 1 else cam
    rgb, _, op = render_images(field, small, cfg.n_coarse, cfg.n_fine, stratified=True)
    size = (small.height, small.width)
    gt = F.interpolate(views.images[[i]], size=size, mode="area")
    mask = F.interpolate(views.masks[[i]], size=size, mode="area")
    return reconstruction_loss(rgb, op, gt, mask, cfg.huber_delta, cfg.opacity_weight)


def fusion_loss(field: nn.Module, teacher: Teacher, cameras: Cameras, state: DistillState, cfg: DistillConfig,
                perceptual: Perceptual | None, generator: torch.Generator) -> Tensor:
    """The fusion step's loss on random prepared cameras (bootstrap or denoised targets)."""
    reuse = state.target is not None and state.target_age < cfg.reuse_target
    if reuse:
        index = state.target_index
    else:
        index = torch.randperm(len(cameras), generator=generator)[: cfg.views_per_step]
    rgb, op = _render(field, cameras[index.tolist()], cfg)
    if state.iteration < cfg.bootstrap_iters:
        target, mask = teacher.bootstrap(index)
        return pseudo_huber(rgb, target.to(rgb), cfg.huber_delta) + pseudo_huber(op, mask.to(op), cfg.huber_delta)
    if not reuse:
        t = cfg.t_min + (cfg.t_max - cfg.t_min) * torch.rand(len(index), generator=generator)
        state.target, state.target_weight = teacher.denoise(rgb.detach(), index, t, generator)
        state.target_index, state.target_age = index, 0
    state.target_age += 1
    w = state.target_weight.to(rgb)[:, None, None, None]
    loss = (w * (rgb - state.target.to(rgb)).abs()).mean()
    if perceptual is not None and cfg.perceptual_weight > 0:
        loss = loss + cfg.perceptual_weight * perceptual(rgb, state.target.to(rgb)).mean()
    return loss


def distill(field: nn.Module, views: Views, cameras: Cameras, teacher: Teacher, cfg: DistillConfig = DistillConfig(),
            perceptual: Perceptual | None = None, state: DistillState | None = None,
            optimizer: torch.optim.Optimizer | None = None, seed: int = 0, progress: bool = True,
            on_iteration: Callable[[DistillState, dict], None] | None = None) -> DistillState:
    """Run the loop from ``state.iteration`` to ``cfg.iters``; ``cameras`` are the fusion cameras.

    ``teacher.prepare(cameras)`` must have been called. ``on_iteration(state, logs)`` runs after
    every iteration (checkpoints, logging).
    """
    state = state or DistillState()
    opt = optimizer or torch.optim.Adam(field_parameter_groups(field, cfg.lr_grid, cfg.lr_mlp), eps=1e-15)
    g = torch.Generator().manual_seed(seed * 100003 + state.iteration)
    bar = tqdm(range(state.iteration, cfg.iters), initial=state.iteration, total=cfg.iters,
               desc="distill", disable=not progress)
    for it in bar:
        state.iteration = it
        i = int(torch.randint(len(views), (1,), generator=g))
        loss_in = input_view_loss(field, views, i, cfg)
        opt.zero_grad(set_to_none=True)
        loss_in.backward()
        opt.step()
        loss_fu = fusion_loss(field, teacher, cameras, state, cfg, perceptual, g)
        opt.zero_grad(set_to_none=True)
        loss_fu.backward()
        opt.step()
        state.iteration = it + 1
        logs = {"input": loss_in.item(), "fusion": loss_fu.item(), "unet_evaluations": teacher.unet_evaluations}
        bar.set_postfix(input=f"{logs['input']:.4f}", fusion=f"{logs['fusion']:.4f}")
        if on_iteration is not None:
            on_iteration(state, logs)
    return state

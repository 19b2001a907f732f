"""The distillation loop (SparseFusion's recipe): fit an instance field to input views and a teacher.

Each iteration:

1. input-view step: one input view rendered at ``render_scale``; pseudo-Huber RGB + pseudo-Huber
   silhouette against its mask + ``opacity_weight`` · mean √(opacity² + 0.01);
2. fusion step on a random prepared camera, rendered at ``render_scale`` and upsampled:
   during the bootstrap, regress the teacher's deterministic RGB and mask; afterwards draw
   t ~ U(t_min, t_max), let the teacher denoise the render to x̂0 and minimise
   (1 − ᾱ_t)·L1(render, x̂0) + ``perceptual_weight``·perceptual(render, x̂0); in both phases
   plus ``fusion_opacity_weight`` · mean √(opacity² + 0.01) (the official adds 1e-3 here too).

``reuse_target`` keeps a denoised target for several iterations (fewer teacher calls);
``views_per_step`` renders several cameras per fusion step. ``mode=sds`` replaces the
denoised-target regression by DreamFusion's score distillation (one UNet call per step).
"""

from __future__ import annotations

import contextlib

from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from scenes.cameras import Cameras
from scenes.co3d import Views
from scenes.losses import pseudo_huber

from .photometric import FitConfig, make_optimizer, reconstruction_loss
from .render import Sampler, render_images
from .sampler import make_sampler
from .teacher import Teacher

Perceptual = Callable[[Tensor, Tensor], Tensor]  # images (B,3,H,W) in [0,1] -> (B,) distances


@dataclass
class DistillConfig(FitConfig):
    """The distillation schedule (paper preset: 3000 iterations, bootstrap for the first 1000)."""

    mode: Literal["multistep", "sds"] = "multistep"
    """multistep (SparseFusion: regress multi-step denoised targets) or sds; reconstruct sets it from `mode`
    (and refuses `distill.mode` in its configs)."""
    iters: int = 3000
    """Iterations (each one input-view step and one fusion step)."""
    bootstrap_iters: int = 1000
    """Fusion steps regress the teacher's deterministic RGB up to this iteration."""
    render_scale: float = 0.5
    """Renders are made at this fraction of the image size and upsampled."""
    t_min: float = 0.02
    """Smallest noise level drawn for a fusion step."""
    t_max: float = 0.98
    """Largest noise level drawn for a fusion step."""
    fusion_opacity_weight: float = 0.0
    """Weight of the opacity regulariser mean √(opacity² + 0.01) in the fusion step (official: 1e-3)."""
    perceptual_weight: float = 0.1
    """Weight of the perceptual (LPIPS-VGG) term; 0 or no perceptual metric switches it off."""
    sds_weight: float = 1.0
    """mode=sds: scale of the score-distillation gradient."""
    reuse_target: int = 1
    """Use each denoised target for this many fusion steps (1: a fresh one every step)."""
    views_per_step: int = 1
    """Cameras rendered per fusion step."""
    bf16: bool = False
    """bf16 autocast for renders and the teacher (CUDA only; ignored elsewhere)."""


@dataclass
class DistillState:
    """What the loop carries between iterations (and what a checkpoint must hold to resume)."""

    iteration: int = 0
    target: Tensor | None = None  # cached x̂0 for reuse, (B, 3, H, W)
    target_index: Tensor | None = None
    target_weight: Tensor | None = None
    target_age: int = 0
    generator: torch.Generator | None = None  # the loop's random stream (view picks, noise levels, noise)


def _render(field: nn.Module, cameras: Cameras, sampler: Sampler, scale: float) -> tuple[Tensor, Tensor]:
    """RGB (B, 3, H, W) and opacity (B, 1, H, W) rendered at ``scale`` of the cameras' size (stratified)."""
    small = cameras.scaled(scale) if scale != 1 else cameras
    rgb, _, opacity = render_images(field, small, sampler, stratified=True)
    return rgb, opacity


def _upsample(x: Tensor, size: tuple[int, int]) -> Tensor:
    return x if x.shape[-2:] == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def input_view_loss(field: nn.Module, views: Views, i: int, sampler: Sampler, cfg: DistillConfig) -> Tensor:
    """Reconstruction loss of input view ``i`` (rendered at render_scale, compared at that size)."""
    rgb, op = _render(field, views.cameras[[i]], sampler, cfg.render_scale)
    size = tuple(rgb.shape[-2:])
    gt = F.interpolate(views.images[[i]].to(rgb), size=size, mode="area")
    mask = F.interpolate(views.masks[[i]].to(rgb), size=size, mode="area")
    return reconstruction_loss(rgb, op, gt, mask, cfg.huber_delta, cfg.opacity_weight)


def fusion_loss(field: nn.Module, teacher: Teacher, cameras: Cameras, sampler: Sampler, state: DistillState,
                cfg: DistillConfig, perceptual: Perceptual | None, generator: torch.Generator) -> Tensor:
    """The fusion step's loss on random prepared cameras (bootstrap, denoised targets, or SDS) + its opacity term."""
    loss, opacity = _fusion_terms(field, teacher, cameras, sampler, state, cfg, perceptual, generator)
    if cfg.fusion_opacity_weight > 0:
        loss = loss + cfg.fusion_opacity_weight * torch.sqrt(opacity**2 + 0.01).mean()
    return loss


def _fusion_terms(field: nn.Module, teacher: Teacher, cameras: Cameras, sampler: Sampler, state: DistillState,
                  cfg: DistillConfig, perceptual: Perceptual | None,
                  generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The fusion step's loss without the opacity term, and the upsampled opacity (B, 1, H, W) it rendered."""
    reuse = cfg.mode == "multistep" and state.target is not None and state.target_age < cfg.reuse_target
    if reuse:
        index = state.target_index
    else:
        index = torch.randperm(len(cameras), generator=generator)[: cfg.views_per_step]
    rgb, op = _render(field, cameras[index.tolist()], sampler, cfg.render_scale)
    size = (cameras.height, cameras.width)
    rgb, op = _upsample(rgb, size), _upsample(op, size)
    if state.iteration < cfg.bootstrap_iters:
        target, mask = teacher.bootstrap(index)
        return pseudo_huber(rgb, target.to(rgb), cfg.huber_delta) + pseudo_huber(op, mask.to(op), cfg.huber_delta), op
    if not reuse:
        t = cfg.t_min + (cfg.t_max - cfg.t_min) * torch.rand(len(index), generator=generator)
        if cfg.mode == "sds":
            return cfg.sds_weight * teacher.sds_loss(rgb, index, t, generator), op
        state.target, state.target_weight = teacher.denoise(rgb.detach(), index, t, generator)
        state.target_index, state.target_age = index, 0
    state.target_age += 1
    w = state.target_weight.to(rgb)[:, None, None, None]
    loss = (w * (rgb - state.target.to(rgb)).abs()).mean()
    if perceptual is not None and cfg.perceptual_weight > 0:
        loss = loss + cfg.perceptual_weight * perceptual(rgb, state.target.to(rgb)).mean()
    return loss, op


def distill(field: nn.Module, views: Views, cameras: Cameras, teacher: Teacher, cfg: DistillConfig = DistillConfig(),
            perceptual: Perceptual | None = None, state: DistillState | None = None,
            optimizer: torch.optim.Optimizer | None = None, sampler: Sampler | None = None, seed: int = 0,
            progress: bool = True, on_iteration: Callable[[DistillState, dict], None] | None = None) -> DistillState:
    """Run the loop from ``state.iteration`` to ``cfg.iters``; ``cameras`` are the fusion cameras.

    ``teacher.prepare(cameras)`` must have been called, and ``sampler.prepare(views)`` for a given
    sampler. ``on_iteration(state, logs)`` runs after every iteration (checkpoints, logging).
    """
    if cfg.mode not in ("multistep", "sds"):
        raise ValueError(f"unknown distillation mode {cfg.mode!r} (multistep or sds)")
    state = state or DistillState()
    dev = next(field.parameters()).device
    opt = optimizer or make_optimizer(field, cfg)
    if sampler is None:  # a given sampler is prepared by its owner, once per scene
        sampler = make_sampler(cfg.sampler, dev)
        sampler.prepare(views)
    if state.generator is None:  # a resumed state brings its stream; torch's global one is the caller's to restore
        state.generator = torch.Generator().manual_seed(seed * 100003 + state.iteration)
    g = state.generator
    use_bf16 = cfg.bf16 and dev.type == "cuda"
    autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()  # noqa: E731
    bar = tqdm(range(state.iteration, cfg.iters), initial=state.iteration, total=cfg.iters,
               desc=f"distill ({cfg.mode})", disable=not progress)
    for it in bar:
        state.iteration = it
        sampler.update(field, it)
        i = int(torch.randint(len(views), (1,), generator=g))
        with autocast():
            loss_in = input_view_loss(field, views, i, sampler, cfg)
        opt.zero_grad(set_to_none=True)
        loss_in.backward()
        opt.step()
        with autocast():
            loss_fu = fusion_loss(field, teacher, cameras, sampler, state, cfg, perceptual, g)
        opt.zero_grad(set_to_none=True)
        loss_fu.backward()
        opt.step()
        state.iteration = it + 1
        logs = {"input": loss_in.item(), "fusion": loss_fu.item(), "unet_evaluations": teacher.unet_evaluations}
        if not (torch.isfinite(loss_in) and torch.isfinite(loss_fu)):
            raise FloatingPointError(f"non-finite loss at iteration {it}: {logs}")
        bar.set_postfix(input=f"{logs['input']:.4f}", fusion=f"{logs['fusion']:.4f}")
        if on_iteration is not None:
            on_iteration(state, logs)
    return state


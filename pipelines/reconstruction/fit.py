"""Fitting one scene's field (SparseFusion, SDS or photometric) with checkpoints, for ``reconstruct`` and the harness.

A checkpoint (``state.pt``, tensors only, read with ``weights_only=True``) holds the field,
the optimizer, the iteration, the occupancy grid if any, the cached denoised target and every
random state (the loop's generator, torch's CPU and CUDA streams), so a run killed at any
iteration and resumed from its last checkpoint ends with the uninterrupted run's field.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from dataclasses import field as dc_field
from pathlib import Path
from typing import Callable, ClassVar, Literal, get_args

import torch

from distill.field import FieldConfig, InstanceField
from distill.loop import DistillConfig, DistillState, distill
from distill.photometric import PhotometricConfig, fit_photometric, make_optimizer
from distill.sampler import make_sampler
from scenes.cameras import Cameras
from scenes.co3d import Views
from scenes.errors import UserError
from scenes.io import atomic_path
from scenes.normalize import circle_path

Mode = Literal["sparsefusion", "sds", "photometric"]  # a typo fails when the config loads
MODES = get_args(Mode)
TeacherSolver = Literal["ddim", "dpm", "plms-stochastic"]  # vldm.teacher.SOLVERS (a test keeps the two equal)


@dataclass
class TeacherConfig:
    """How the VLDM denoises a noised render to its target (paper preset: the official schedule)."""

    steps: int = 10
    """Denoising steps per target (with steps_per_t > 0: the most a target takes)."""
    steps_per_t: float = 0.0
    """> 0: a render noised to t takes min(int(steps_per_t·t), steps) steps (official: 100, 50); 0: `steps`."""
    solver: TeacherSolver = "ddim"
    """ddim, dpm (DPM-Solver++ 2M; deterministic, 1 UNet call a step) or plms-stochastic (official, steps + 1)."""
    guidance_scale: float = 1.0
    """Classifier-free guidance (1: none; otherwise 2 UNet evaluations per call)."""


@dataclass
class FitSceneConfig:
    """Everything that decides how one scene is fitted."""

    DERIVED: ClassVar[dict[str, str]] = {"distill.mode": "fit_scene sets it from `mode` (sparsefusion: multistep, "
                                                         "sds: sds); set `mode` instead"}

    mode: Mode = "sparsefusion"
    """sparsefusion (multi-step distillation), sds (score distillation) or photometric (no teacher)."""
    field: FieldConfig = dc_field(default_factory=FieldConfig)
    """Instance field size and backend."""
    distill: DistillConfig = dc_field(default_factory=DistillConfig)
    """Distillation schedule (modes sparsefusion and sds)."""
    photometric: PhotometricConfig = dc_field(default_factory=PhotometricConfig)
    """Photometric fitting (mode photometric)."""
    teacher: TeacherConfig = dc_field(default_factory=TeacherConfig)
    """VLDM teacher settings."""
    circle_views: int = 50
    """Fusion cameras on a circle fitted to the cameras (plus the inputs and any given targets)."""
    circle_fit: Literal["inputs", "all"] = "inputs"
    """Cameras the circle is fitted to: inputs, or all (the inputs and the given targets: the official fit)."""
    circle_jitter: float = 0.0
    """Elevation jitter of each circle camera, uniform in ± this many radians (official: 0.17)."""
    checkpoint_every: int = 50
    """Write a resumable checkpoint every N iterations (0: never)."""
    perceptual: bool = True
    """Use LPIPS-VGG in the fusion loss when its weights are on this machine."""


@dataclass
class FitResult:
    """A fitted field and what it cost."""

    field: InstanceField
    sampler: object
    iterations: int
    unet_evaluations: int
    seconds: float
    resumed_from: int = 0


def _rng_state(device: torch.device) -> dict:
    """torch's global random state: CPU, and the device's when fitting on CUDA (the renderer's jitter draws from it)."""
    out = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def _set_rng_state(rng: dict | None, device: torch.device) -> None:
    if rng is None:
        return
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)


def _save_state(path: Path, fld: InstanceField, opt: torch.optim.Optimizer, iteration: int, sampler,
                state: DistillState | None, unet_evaluations: int, generator: torch.Generator) -> None:
    device = next(fld.parameters()).device
    blob = {"field": fld.state_dict(), "optimizer": opt.state_dict(), "iteration": iteration,
            "unet_evaluations": unet_evaluations, "generator": generator.get_state(), "rng": _rng_state(device)}
    occupancy = sampler.state_dict()
    if occupancy:
        blob["occupancy"] = occupancy
    if state is not None and state.target is not None:
        blob["target"] = {"target": state.target, "index": state.target_index, "weight": state.target_weight,
                          "age": state.target_age}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def _load_state(path: Path, fld, opt, sampler) -> tuple[int, int, DistillState, dict | None]:
    """Restore field, optimizer and occupancy; returns iteration, UNet evaluations, loop state, global random state."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        fld.load_state_dict(blob["field"])
        opt.load_state_dict(blob["optimizer"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise UserError(f"checkpoint {path} does not match this configuration ({str(err).splitlines()[0]}); "
                        "delete it or run with resume=false") from None
    try:
        sampler.load_state_dict(blob.get("occupancy", {}))
    except (RuntimeError, KeyError, ValueError) as err:
        raise UserError(f"checkpoint {path}: its occupancy grid does not match this sampler ({err}); "
                        "delete it or run with resume=false") from None
    state = DistillState(iteration=blob["iteration"])
    if "generator" in blob:  # checkpoints written before the random state was saved resume re-seeded
        state.generator = torch.Generator()
        state.generator.set_state(blob["generator"])
    if "target" in blob:
        t = blob["target"]
        state.target, state.target_index, state.target_weight, state.target_age = (
            t["target"], t["index"], t["weight"], t["age"])
    return blob["iteration"], blob["unet_evaluations"], state, blob.get("rng")


def fusion_cameras(inputs: Cameras, targets: Cameras | None, circle_views: int, circle_fit: str = "inputs",
                   circle_jitter: float = 0.0, seed: int = 0) -> Cameras:
    """Inputs + ``circle_views`` circle cameras + the given targets (at the inputs' size and device).

    The circle is fitted to the inputs, or with ``circle_fit="all"`` to the inputs and targets (the
    official fit to all of a sequence's cameras; inputs only when there are no targets). Each
    circle camera's elevation is jittered by U(±circle_jitter) radians, seeded by ``seed``.
    """
    if circle_fit not in ("inputs", "all"):
        raise UserError(f"circle_fit={circle_fit!r} must be inputs or all")
    like = lambda c: c.to(device=inputs.R.device, dtype=inputs.R.dtype)  # noqa: E731
    targets = None if targets is None else like(targets.resize(inputs.height, inputs.width))
    fit_to = inputs if circle_fit == "inputs" or targets is None else Cameras.cat([inputs, targets])
    circle = circle_path(fit_to, circle_views, circle_jitter, torch.Generator().manual_seed(seed))
    return Cameras.cat([like(p) for p in (inputs, circle, targets) if p is not None])


def fit_scene(inputs: Views, targets: Cameras | None, cfg: FitSceneConfig, device: torch.device, pipe=None,
              perceptual: Callable | None = None, state_path: Path | None = None, resume: bool = True,
              seed: int = 0, progress: bool = True,
              on_iteration: Callable[[int, dict], None] | None = None) -> FitResult:
    """Fit a field to ``inputs`` (and the teacher's views of ``targets`` and the circle), resumably."""
    if cfg.mode not in MODES:
        raise UserError(f"unknown mode {cfg.mode!r} ({', '.join(MODES)})")
    torch.manual_seed(seed)
    fld = cfg.field.build().to(device)
    fit_cfg = cfg.photometric if cfg.mode == "photometric" else cfg.distill
    opt = make_optimizer(fld, fit_cfg)
    sampler = make_sampler(fit_cfg.sampler, device)
    sampler.prepare(inputs)  # the input masks' hull, once per scene (a checkpoint's grid replaces it on resume)
    start, unet0, state, rng = 0, 0, DistillState(), None
    if resume and state_path is not None and state_path.is_file():
        start, unet0, state, rng = _load_state(state_path, fld, opt, sampler)
    t0 = time.perf_counter()
    teacher = None

    def checkpoint(done: int, log: dict, generator: torch.Generator, dstate: DistillState | None = None) -> None:
        log = {"iteration": done, **log}
        if teacher is not None:
            log["unet_evaluations"] = unet0 + teacher.unet_evaluations
        if on_iteration is not None:
            on_iteration(done, log)
        total = fit_cfg.iters
        if state_path is not None and cfg.checkpoint_every and (done % cfg.checkpoint_every == 0 or done == total):
            _save_state(state_path, fld, opt, done, sampler, dstate,
                        unet0 + (teacher.unet_evaluations if teacher else 0), generator)

    views = inputs.to(device)
    if cfg.mode == "photometric":
        gen = state.generator or torch.Generator().manual_seed(seed * 100003 + start)
        _set_rng_state(rng, device)
        fit_photometric(fld, views, cfg.photometric, seed=seed, start=start, optimizer=opt, sampler=sampler,
                        progress=progress, on_iteration=lambda done, log: checkpoint(done, log, gen), generator=gen)
        iterations, unet = max(start, cfg.photometric.iters), 0
    else:
        if pipe is None:
            raise UserError(f"mode {cfg.mode} needs a VLDM checkpoint")
        from vldm.teacher import VLDMTeacher

        ctx_images, ctx_cams = pipe.at_image_size(inputs.images, inputs.cameras)
        teacher = VLDMTeacher(pipe, ctx_images.to(device), ctx_cams.to(device), cfg.teacher.steps,
                              cfg.teacher.guidance_scale, cfg.teacher.solver, cfg.teacher.steps_per_t)
        cams = fusion_cameras(ctx_cams, targets, cfg.circle_views, cfg.circle_fit, cfg.circle_jitter, seed)
        teacher.prepare(cams.to(device))
        _set_rng_state(rng, device)  # after everything before the loop, as the uninterrupted run stood at the checkpoint
        dcfg = replace(cfg.distill, mode="sds" if cfg.mode == "sds" else "multistep")
        state = distill(fld, views, cams.to(device), teacher, dcfg, perceptual, state=state, optimizer=opt,
                        sampler=sampler, seed=seed, progress=progress,
                        on_iteration=lambda s, log: checkpoint(s.iteration, log, s.generator, s))
        iterations, unet = state.iteration, unet0 + teacher.unet_evaluations
    return FitResult(fld.eval(), sampler, iterations, unet, time.perf_counter() - t0, start)

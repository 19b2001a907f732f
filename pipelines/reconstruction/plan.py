"""What ``sparsefusion reconstruct`` will run, said before it starts: the default preset per device.

Without ``--config``, a CPU runs ``fast`` (minutes per 64² scene) and CUDA runs ``paper`` (the
published schedule, ≈ 76,000 UNet evaluations per scene). The first line printed names the
preset, its iterations, its UNet evaluations per scene and the expected time where it has been
measured (seconds per iteration on the project's 2-core CPU machine at 64², scaled by the pixel
count; no GPU figures yet).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

DEFAULT_PRESET = {"cpu": "fast", "cuda": "paper"}

# Seconds per iteration (bootstrap, after) at 64² on the project's 2-core CPU machine, from
# `sparsefusion bench figures=[reconstruction] preset=<name>`'s measured iterations, 2026-12-06:
# fast quiet (0.140-0.165 in the bootstrap, 0.148-0.154 after); demo, sds and paper measured later
# the same day when the machine ran slower (fast then 0.200 / 0.211) and scaled by fast's ratio
# (0.73). The EFT's conditioning (3-5 s) comes on top. Rough by design: the progress bar gives the
# real ETA.
CPU_SECONDS_PER_ITERATION_64 = {"fast": (0.15, 0.15), "demo": (0.20, 0.35), "sds": (0.17, 0.22),
                                "paper": (0.67, 1.8)}


def device_kind(device: str) -> str:
    """``cpu`` or ``cuda`` for a config's device string (auto: cuda when available)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if device.startswith("cuda") else "cpu"


def default_preset(cfg) -> str:
    """The reconstruct preset used without --config: fast on a CPU, paper on CUDA."""
    return DEFAULT_PRESET[device_kind(cfg.device)]


def unet_evaluations_per_scene(cfg) -> int:
    """Expected UNet evaluations of one scene under this config (0 for photometric)."""
    from vldm.teacher import expected_calls

    d = cfg.distill
    post = max(0, d.iters - d.bootstrap_iters)
    if cfg.mode == "photometric" or post == 0:
        return 0
    guidance = 1 if cfg.teacher.guidance_scale == 1.0 else 2
    if cfg.mode == "sds":
        return post * d.views_per_step * guidance
    per_target = expected_calls(cfg.teacher.steps, cfg.teacher.steps_per_t, cfg.teacher.solver, d.t_min, d.t_max)
    return round(math.ceil(post / max(1, d.reuse_target)) * d.views_per_step * per_target * guidance)


def backends(cfg) -> str:
    """The ray sampler and hash-grid backend this config resolves to here (``auto`` made explicit)."""
    from distill.encoding import tcnn_available
    from distill.sampler import occgrid_available

    fit = cfg.photometric if cfg.mode == "photometric" else cfg.distill
    cuda = device_kind(cfg.device) == "cuda"
    sampler = fit.sampler.name
    if sampler in ("auto", "occgrid"):
        sampler = "occgrid" if cuda and occgrid_available() else "dense"
    if sampler == "dense":
        sampler = f"dense {fit.sampler.n_coarse}+{fit.sampler.n_fine}"
        if fit.sampler.skip_empty:
            sampler += " skipping empty cells" + (" (inputs' hull carved)" if fit.sampler.carve_inputs else "")
    backend = cfg.field.backend
    if backend == "auto":
        backend = "tcnn" if cuda and tcnn_available() else "torch"
    return f"sampler {sampler}, hash grid {backend}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan_line(cfg, preset: str, by_default: bool) -> str:
    """One line: preset (and why), iterations, UNet evaluations and expected time per scene."""
    kind = device_kind(cfg.device)
    name = Path(preset).stem
    where = "CUDA" if kind == "cuda" else "a CPU"
    why = f"the default on {where}; --config to choose" if by_default else "from --config"
    iters = cfg.photometric.iters if cfg.mode == "photometric" else cfg.distill.iters
    unet = unet_evaluations_per_scene(cfg)
    size = cfg.data.image_size or 256
    line = (f"sparsefusion reconstruct: preset {name} ({why}), mode {cfg.mode}, {backends(cfg)}: "
            f"{iters} iterations, "
            f"{unet:,} UNet evaluations per scene")
    per_it = CPU_SECONDS_PER_ITERATION_64.get(name) if kind == "cpu" and cfg.mode != "photometric" else None
    if per_it is not None:
        d = cfg.distill
        boot = min(d.bootstrap_iters, d.iters)
        seconds = (boot * per_it[0] + (d.iters - boot) * per_it[1]) * (size / 64) ** 2
        line += f", about {_duration(seconds)} per {size}² scene on a 2-core CPU"
        if name == "paper":
            line += " (use --config fast for minutes)"
    else:
        where = "on GPUs yet" if kind == "cuda" else "for this preset"
        line += f"; time per {size}² scene not measured {where}: the progress bar shows the ETA"
    return line

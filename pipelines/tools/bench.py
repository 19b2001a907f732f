"""``sparsefusion bench``: medians of repeated timings, with the machine and the preset, as JSON.

Figures: VLDM sampling seconds per view (DDIM), EFT seconds per view, VLDM training images/s
(forward + backward of EFT and UNet on one example), field forward+backward samples/s,
rendered rays/s, and ``reconstruction``: seconds per distillation iteration and per scene of a
reconstruct preset, its UNet evaluations and VAE calls per scene, and where an iteration's time
goes (field, rendering, UNet, VAE, LPIPS, other; see :mod:`pipelines.tools.bench_reconstruction`), and
``training``: one training step of each demo model (VLDM, pixelNeRF, DFM, VAE) and where its time
goes (see :mod:`pipelines.tools.bench_training`).
Each is the median of ``repeats`` runs after one warm-up.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from pipelines.common.runtime import machine_info, resolve_device
from pipelines.tools.bench_cameras import ring_cameras
from scenes.errors import UserError
from scenes.io import write_json

FIGURES = {"vldm_sampling", "eft", "vldm_train_step", "field", "render", "reconstruction", "training"}


@dataclass
class BenchConfig:
    """Configuration of ``sparsefusion bench``."""

    checkpoint: str | None = None
    """VLDM folder (default: the shipped demo model)."""
    figures: list[str] = field(default_factory=lambda: ["vldm_sampling", "eft", "vldm_train_step", "field", "render",
                                                        "reconstruction", "training"])
    """Which figures to measure."""
    training_models: list[str] = field(default_factory=lambda: ["vldm", "pixelnerf", "dfm", "vae"])
    """Models of the ``training`` figure (vldm, pixelnerf, dfm, vae: their shipped demo models)."""
    repeats: int = 3
    """Timed runs per figure (after one warm-up); the median is reported."""
    preset: str = "fast"
    """Reconstruct preset (configs/reconstruct/ name or YAML) of the reconstruction figure."""
    views: int = 2
    """Context views."""
    steps: int = 25
    """DDIM steps per VLDM sample."""
    device: str = "auto"
    """cpu, cuda or auto."""
    out: str = "outputs/bench/bench.json"
    """Output JSON."""


def median_seconds(fn: Callable[[], None], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after one warm-up (CUDA synchronised)."""
    fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _vldm_figures(cfg: BenchConfig, pipe, device, results: dict) -> None:
    from vldm.autoencoder import encode
    from vldm.diffusion import diffusion_loss

    size = pipe.image_size
    cams = ring_cameras(cfg.views + 1, size, device)
    ctx, query = cams[list(range(cfg.views))], cams[[cfg.views]]
    imgs = torch.rand(cfg.views, 3, size, size, device=device)
    results["image_size"] = size
    if "vldm_sampling" in cfg.figures:
        g = torch.Generator(device).manual_seed(0)
        results["vldm_sampling_s_per_view"] = median_seconds(
            lambda: pipe(imgs, ctx, query, num_inference_steps=cfg.steps, generator=g), cfg.repeats)
        results["vldm_sampling_steps"] = cfg.steps
    if "eft" in cfg.figures:
        with torch.no_grad():
            results["eft_s_per_view"] = median_seconds(lambda: pipe.condition(imgs, ctx, query), cfg.repeats)
    if "vldm_train_step" in cfg.figures:
        pipe.eft.train(), pipe.unet.train()
        params = list(pipe.eft.parameters()) + list(pipe.unet.parameters())
        size_lat = pipe.latent_size(query)

        def step():
            out = pipe.eft(imgs, ctx, query, size_lat)
            with torch.no_grad():
                lat = encode(pipe.vae, imgs[:1])
            loss = diffusion_loss(pipe.unet, pipe.scheduler, lat, out.features, None, 12, 0.1) + out.rgb.mean()
            torch.autograd.grad(loss, params, allow_unused=True)

        results["vldm_train_images_per_s"] = 1.0 / median_seconds(step, cfg.repeats)
        pipe.eft.eval(), pipe.unet.eval()


def _field_figures(cfg: BenchConfig, device, results: dict) -> None:
    from distill.field import InstanceField
    from scenes.render import render_rays

    f = InstanceField(backend="auto").to(device)
    pts = (torch.rand(2**16, 3, device=device) * 2 - 1)
    if "field" in cfg.figures:
        def fwd_bwd():
            rgb, sigma = f(pts)
            (rgb.sum() + sigma.sum()).backward()

        results["field_fwd_bwd_samples_per_s"] = pts.shape[0] / median_seconds(fwd_bwd, cfg.repeats)
    if "render" in cfg.figures:
        o = torch.tensor([[0.0, 0.0, -3.0]], device=device).expand(4096, -1)
        d = torch.nn.functional.normalize(torch.randn(4096, 3, device=device) * 0.1 + torch.tensor([0.0, 0, 1], device=device), dim=-1)
        with torch.no_grad():
            results["render_rays_per_s_64+32"] = 4096 / median_seconds(lambda: render_rays(f, o, d, 64, 32), cfg.repeats)


def run(cfg: BenchConfig) -> dict:
    """Measure the chosen figures and write the JSON."""
    device = resolve_device(cfg.device)
    unknown = set(cfg.figures) - FIGURES
    if unknown:
        raise UserError(f"unknown figures {sorted(unknown)} (figures: {', '.join(sorted(FIGURES))})")
    from pipelines.tools.bench_training import MODELS

    if set(cfg.training_models) - set(MODELS):
        raise UserError(f"unknown training_models {sorted(set(cfg.training_models) - set(MODELS))} "
                        f"(models: {', '.join(MODELS)})")
    results: dict = {"machine": machine_info(), "device": str(device), "repeats": cfg.repeats,
                     "checkpoint": cfg.checkpoint or "shipped demo"}
    pipe = None
    if {"vldm_sampling", "eft", "vldm_train_step", "reconstruction"} & set(cfg.figures):
        from vldm.load import load_vldm

        pipe = load_vldm(cfg.checkpoint, device)
        _vldm_figures(cfg, pipe, device, results)
    if {"field", "render"} & set(cfg.figures):
        _field_figures(cfg, device, results)
    if "reconstruction" in cfg.figures:
        from pipelines.tools import bench_reconstruction

        results["preset"] = cfg.preset
        results["reconstruction"] = bench_reconstruction.measure(pipe, cfg.preset, device, cfg.repeats)
    if "training" in cfg.figures:
        from pipelines.tools import bench_training

        results["training"] = bench_training.measure(list(cfg.training_models), device, cfg.repeats)
    write_json(cfg.out, results)
    for k, v in results.items():
        if not isinstance(v, dict):
            print(f"{k:>32s}: {v:.4g}" if isinstance(v, float) else f"{k:>32s}: {v}")
    if "reconstruction" in results:
        bench_reconstruction.print_table(results["reconstruction"])
    if "training" in results:
        from pipelines.tools import bench_training

        bench_training.print_table(results["training"])
    print(f"results in {cfg.out}")
    return results

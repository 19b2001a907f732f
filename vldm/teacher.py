"""The VLDM as a distillation teacher (implements ``distill.teacher.Teacher``).

``prepare`` fixes the cameras; the EFT runs once per camera, the first time the loop draws it,
and its feature maps and RGB are cached (SparseFusion computes them for all cameras up front;
the values are the same, and cameras never drawn cost nothing); ``bootstrap`` returns the EFT RGB upsampled and its
mask (mean RGB > 0.1); ``denoise`` encodes a render, noises it to t, denoises it to x̂0 and
decodes it, with the deterministic DDIM or DPM-Solver++ steps or the official stochastic PLMS
update (``vldm.solvers``), in ``steps`` steps or, with ``steps_per_t`` > 0, in
min(int(steps_per_t·t), steps) steps per sample (official: 100 and 50); ``sds_loss`` is the
score-distillation surrogate whose gradient through the encoder is w(t)·(ε̂ − ε).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from scenes.cameras import Cameras

from .autoencoder import decode, encode
from .diffusion import denoise_from, guided_eps, timestep_index
from .pipeline import VLDMPipeline
from .solvers import stochastic_plms_calls, stochastic_plms_from

SOLVERS = ("ddim", "dpm", "plms-stochastic")  # pipelines.reconstruction.fit.TeacherSolver checks configs against these


def _noise(shape, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise drawn on the CPU (any generator works) and moved to ``like``'s device."""
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(like.device, like.dtype)


def steps_for(t: Tensor, steps: int, steps_per_t: float) -> Tensor:
    """Denoising steps (B,) for noise levels t (B,): ``steps``, or min(int(steps_per_t·t), steps) when > 0."""
    if steps_per_t <= 0:
        return torch.full(t.shape, steps, dtype=torch.long)
    return (steps_per_t * t.detach().cpu().double()).long().clamp(max=steps)


def expected_calls(steps: int, steps_per_t: float, solver: str, t_min: float, t_max: float) -> float:
    """Mean UNet calls per target (no guidance) for t ~ U(t_min, t_max) with this schedule and solver."""
    t = t_min + (t_max - t_min) * (torch.arange(100_000, dtype=torch.float64) + 0.5) / 100_000
    n = steps_for(t.float(), steps, steps_per_t)
    calls = n + (n > 0).long() if solver == "plms-stochastic" else n
    return calls.double().mean().item()


class VLDMTeacher:
    """Denoised targets for renders at prepared cameras, conditioned on fixed context views."""

    def __init__(self, pipe: VLDMPipeline, context_images: Tensor, context_cameras: Cameras,
                 steps: int = 10, guidance_scale: float = 1.0, solver: str = "ddim", steps_per_t: float = 0.0):
        if steps < 1:
            raise ValueError("the teacher needs at least one denoising step")
        if solver not in SOLVERS:
            raise ValueError(f"unknown teacher solver {solver!r} ({', '.join(SOLVERS)})")
        self.pipe, self.steps, self.guidance_scale, self.solver = pipe, steps, guidance_scale, solver
        self.steps_per_t = steps_per_t
        self.context_images, self.context_cameras = context_images, context_cameras
        self.unet_evaluations = 0
        self.eft_queries = 0  # cameras the EFT has run at (each once)
        self.cameras: Cameras | None = None
        self.size: tuple[int, int] = (0, 0)
        self._context_features: Tensor | None = None  # (V, 512, H/2, W/2)
        self._cache: dict[int, tuple[Tensor, Tensor]] = {}  # camera -> features (C, h, w), RGB (3, h, w)

    def prepare(self, cameras: Cameras) -> None:
        """Fix the cameras (at the teacher's image size) whose EFT conditioning is computed on first use."""
        self.cameras, self.size, self._cache = cameras, (cameras.height, cameras.width), {}
        self._context_features = None

    @torch.no_grad()
    def conditioning(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """EFT feature maps (B, C, h, w) and RGB (B, 3, h, w) at prepared cameras ``index`` (B,)."""
        if self.cameras is None:
            raise RuntimeError("call prepare(cameras) before asking the teacher for targets")
        wanted = [int(i) for i in index.tolist()]
        missing = sorted(set(wanted) - self._cache.keys())
        if missing:
            if self._context_features is None:
                self._context_features = self.pipe.eft.encode(self.context_images.to(self.pipe.eft.dtype))
            feats, rgb = self.pipe.condition(self.context_images, self.context_cameras, self.cameras[missing],
                                             context_features=self._context_features)
            self._cache.update({i: (f, c) for i, f, c in zip(missing, feats, rgb)})
            self.eft_queries += len(missing)
        return (torch.stack([self._cache[i][0] for i in wanted]),
                torch.stack([self._cache[i][1] for i in wanted]))

    def bootstrap(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """EFT RGB (B, 3, H, W) upsampled to the image size, and its mask mean(RGB) > 0.1 (B, 1, H, W)."""
        rgb = F.interpolate(self.conditioning(index)[1].float(), size=self.size, mode="bilinear",
                            align_corners=False)
        return rgb, (rgb.mean(1, keepdim=True) > 0.1).float()

    @torch.no_grad()
    def denoise(self, images: Tensor, index: Tensor, t: Tensor,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """x̂0 images (B, 3, H, W) for renders noised to t (B,), and the weights 1 − ᾱ_t (B,)."""
        pipe = self.pipe
        z0 = encode(pipe.vae, images.detach().to(pipe.vae.dtype))
        t_idx = timestep_index(t.to(z0.device), pipe.scheduler.config.num_train_timesteps)
        z_t = pipe.scheduler.add_noise(z0, _noise(z0.shape, z0, generator), t_idx)
        cond = self.conditioning(index)[0].to(z0.dtype)
        x0 = torch.empty_like(z_t)
        steps = self.steps_for(t)
        for n in sorted(set(steps.tolist())):  # samples that take the same number of steps together
            pick = (steps == n).nonzero()[:, 0].to(z0.device)
            x0[pick] = self._solve(z_t[pick], t_idx[pick], cond[pick], n, generator)
        alpha = pipe.scheduler.alphas_cumprod.to(z0.device)[t_idx].float()
        return decode(pipe.vae, x0).float(), 1.0 - alpha

    def steps_for(self, t: Tensor) -> Tensor:
        """Denoising steps (B,) for noise levels t (B,): ``steps``, or min(int(steps_per_t·t), steps)."""
        return steps_for(t, self.steps, self.steps_per_t)

    def expected_unet_calls(self, t_min: float, t_max: float) -> float:
        """Mean UNet calls per target for t ~ U(t_min, t_max) (×2 with guidance); paper: ≈ 38.1."""
        calls = expected_calls(self.steps, self.steps_per_t, self.solver, t_min, t_max)
        return calls * (1 if self.guidance_scale == 1.0 else 2)

    def _solve(self, z_t: Tensor, t_idx: Tensor, cond: Tensor, steps: int, generator) -> Tensor:
        """x̂0 latents of z_t (B, c, h, w) in ``steps`` steps of the configured solver (and their UNet count)."""
        a = self.pipe.scheduler.alphas_cumprod
        if self.solver == "plms-stochastic":
            self._count(stochastic_plms_calls(steps) * z_t.shape[0])
            return stochastic_plms_from(self.pipe.unet, a, z_t, t_idx, cond, steps, self.guidance_scale,
                                        generator=generator)
        self._count(steps * z_t.shape[0])
        return denoise_from(self.pipe.unet, a, z_t, t_idx, cond, steps, self.guidance_scale, self.solver)

    def sds_loss(self, images: Tensor, index: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Scalar whose gradient w.r.t. the latents of ``images`` (B,3,H,W) is w(t)·(ε̂ − ε), w = 1 − ᾱ_t.

        The encoder is differentiated; the UNet is not (DreamFusion's score distillation).
        """
        pipe = self.pipe
        z0 = encode(pipe.vae, images)
        t_idx = timestep_index(t.to(z0.device), pipe.scheduler.config.num_train_timesteps)
        noise = _noise(z0.shape, z0, generator)
        with torch.no_grad():
            z_t = pipe.scheduler.add_noise(z0.detach(), noise, t_idx)
            eps = guided_eps(pipe.unet, z_t, t_idx, self.conditioning(index)[0].to(z0.dtype), self.guidance_scale)
        self._count(images.shape[0])
        w = 1.0 - pipe.scheduler.alphas_cumprod.to(z0.device)[t_idx].float()[:, None, None, None]
        grad = (w * (eps.float() - noise.float())).to(z0.dtype)
        return (grad.detach() * z0).sum(1).mean()  # channels summed, pixels and batch averaged

    def _count(self, calls: int) -> None:
        self.unet_evaluations += calls * (1 if self.guidance_scale == 1.0 else 2)

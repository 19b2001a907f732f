"""The view-conditioned latent diffusion model: UNet, schedules, training loss and solvers.

The UNet sees the noisy latent concatenated with the EFT feature map (conditioning by
concatenation) and predicts ε. Cosine schedule; conditioning dropout enables
classifier-free guidance (the default scale 1 applies none).
"""

from __future__ import annotations

import inspect
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import (
    DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, PNDMScheduler, UNet2DModel,
)
from torch import Tensor

from scenes.errors import UserError

Solver = Literal["ddim", "plms", "dpm", "ddpm"]  # the diffusion solvers of sampling from noise
SOLVERS = {"ddim": DDIMScheduler, "plms": PNDMScheduler, "dpm": DPMSolverMultistepScheduler, "ddpm": DDPMScheduler}


def make_unet(sample_size: int, latent_channels: int, cond_channels: int, *,
              block_out_channels: tuple[int, ...] = (256, 512, 1024, 1024), layers_per_block: int = 2,
              norm_num_groups: int = 32, attention_head_dim: int = 64) -> UNet2DModel:
    """UNet2DModel with (latent + cond) input channels, self-attention at the lowest level and the middle."""
    n = len(block_out_channels)
    return UNet2DModel(
        sample_size=sample_size, in_channels=latent_channels + cond_channels, out_channels=latent_channels,
        block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
        down_block_types=("DownBlock2D",) * (n - 1) + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (n - 1),
        norm_num_groups=norm_num_groups, attention_head_dim=attention_head_dim,
    )


def make_scheduler(num_train_timesteps: int = 1000) -> DDPMScheduler:
    """Training scheduler: cosine (squaredcos_cap_v2) betas, ε-prediction."""
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2",
                         prediction_type="epsilon", clip_sample=False)


SAMPLE_CLIP_X0 = 4.0
"""Default clip of x̂0 when sampling from pure noise. With trailing spacing the first step is
t = 999, where the cosine schedule's ᾱ is 2.4e-9: x̂0 = (x − √(1−ᾱ)·ε̂)/√ᾱ multiplies any ε̂
error by 2·10⁴, and without a clip the demo VLDM's samples came out as coloured noise (PSNR 9.7
against 12.9 dB clipped, obj_800-801). Latents have unit std (the fitted scaling factor), so
±4 keeps every plausible value."""


def solver_from(scheduler, name: str, clip_x0: float | None = None):
    """A solver (a sampling scheduler: ddim, plms, dpm, ddpm) sharing the training scheduler's schedule.

    Timesteps are spaced ``trailing``, so every solver starts at the last training timestep
    (t = 999 of 1000, ᾱ ≈ 0) whatever the number of steps; diffusers' default ``leading``
    spacing would start at 1000 − 1000/steps (t = 960 for 25 steps). ``clip_x0`` clips the
    predicted x̂0 to ±clip_x0 at every step (the official solver: ±10 on the latents).
    """
    if name not in SOLVERS:
        raise UserError(f"unknown solver {name!r} (one of {', '.join(SOLVERS)})")
    # as keyword arguments: diffusers drops config keys that were defaults (`_use_default_values`)
    options = {"timestep_spacing": "trailing", "steps_offset": 0}
    if name == "plms":
        options["skip_prk_steps"] = True
    if clip_x0 is not None:
        options.update(clip_sample=True, clip_sample_range=float(clip_x0))
    return SOLVERS[name].from_config(scheduler.config, **options)


def p2_weight(alphas_cumprod: Tensor, gamma: float = 0.5, k: float = 1.0) -> Tensor:
    """P2 loss weight (k + SNR_t)^−γ per timestep, SNR_t = ᾱ_t / (1 − ᾱ_t) (γ = 0: weight 1)."""
    a = alphas_cumprod.float()
    return (k + a / (1 - a)) ** -gamma


def diffusion_loss(unet: UNet2DModel, scheduler: DDPMScheduler, latents: Tensor, cond: Tensor,
                   valid: Tensor | None = None, repeats: int = 1, cond_drop: float = 0.0,
                   generator: torch.Generator | None = None, p2_gamma: float = 0.0,
                   p2_k: float = 1.0) -> Tensor:
    """ε-prediction MSE on latents (B, c, h, w) given cond (B, C, h, w), masked by valid (B, 1, h, w).

    Each example is repeated ``repeats`` times with independent timesteps and noise; the
    conditioning of each repeat is zeroed with probability ``cond_drop``. Each repeat's squared
    error is weighted by :func:`p2_weight` of its timestep (``p2_gamma`` = 0: unweighted).
    """
    lat = latents.repeat_interleave(repeats, 0)
    cond = cond.repeat_interleave(repeats, 0)
    B = lat.shape[0]
    dev = lat.device
    t = torch.randint(0, scheduler.config.num_train_timesteps, (B,), device=dev, generator=generator)
    noise = torch.randn(lat.shape, device=dev, dtype=lat.dtype, generator=generator)
    noisy = scheduler.add_noise(lat, noise, t)
    if cond_drop > 0:
        keep = (torch.rand(B, device=dev, generator=generator) >= cond_drop).to(cond.dtype)
        cond = cond * keep[:, None, None, None]
    eps = unet(torch.cat([noisy, cond], 1), t).sample
    err = (eps.float() - noise.float()) ** 2
    if p2_gamma:
        w_t = p2_weight(scheduler.alphas_cumprod.to(dev)[t], p2_gamma, p2_k)  # (B,)
        err = err * w_t[:, None, None, None]
    if valid is None:
        return err.mean()
    w = valid.repeat_interleave(repeats, 0).to(err.dtype).expand_as(err)
    return (err * w).sum() / w.sum().clamp_min(1.0)


def _step_kwargs(solver, generator) -> dict:
    return {"generator": generator} if "generator" in inspect.signature(solver.step).parameters else {}


def guided_eps(unet: UNet2DModel, x: Tensor, t, cond: Tensor, guidance_scale: float = 1.0) -> Tensor:
    """ε̂ of the UNet; with guidance ≠ 1, ε_u + s·(ε_c − ε_u) with ε_u from zeroed conditioning."""
    if guidance_scale == 1.0:
        return unet(torch.cat([x, cond], 1), t).sample
    both = unet(torch.cat([torch.cat([x, cond], 1), torch.cat([x, torch.zeros_like(cond)], 1)]), t).sample
    eps_c, eps_u = both.chunk(2)
    return eps_u + guidance_scale * (eps_c - eps_u)


@torch.no_grad()
def sample_latents(unet: UNet2DModel, solver, cond: Tensor, latent_channels: int, steps: int = 25,
                   guidance_scale: float = 1.0, generator: torch.Generator | None = None,
                   progress: bool = False) -> Tensor:
    """Draw latents (B, c, h, w) for conditioning maps cond (B, C, h, w) in ``steps`` solver steps."""
    B, _, h, w = cond.shape
    solver.set_timesteps(steps, device=cond.device)
    x = torch.randn((B, latent_channels, h, w), generator=generator, device=cond.device, dtype=cond.dtype)
    x = x * solver.init_noise_sigma
    timesteps = solver.timesteps
    if progress:
        from tqdm import tqdm

        timesteps = tqdm(timesteps, desc="sampling", leave=False)
    for t in timesteps:
        x_in = solver.scale_model_input(x, t)
        eps = guided_eps(unet, x_in, t, cond, guidance_scale)
        x = solver.step(eps, t, x, **_step_kwargs(solver, generator)).prev_sample
    return x


def valid_to_latent(valid: Tensor, size: tuple[int, int], threshold: float = 0.6) -> Tensor:
    """Valid-region mask (B, 1, H, W) -> latent resolution, thresholded (SparseFusion: 0.6)."""
    return (F.interpolate(valid.float(), size=size, mode="area") > threshold).float()


def timestep_index(t: Tensor, num_train_timesteps: int) -> Tensor:
    """Continuous noise levels t ∈ [0, 1] (B,) -> discrete training timesteps (B,)."""
    return (t * (num_train_timesteps - 1)).round().long().clamp(0, num_train_timesteps - 1)


@torch.no_grad()
def denoise_from(unet: UNet2DModel, alphas_cumprod: Tensor, x_t: Tensor, t_index: Tensor, cond: Tensor,
                 steps: int, guidance_scale: float = 1.0, solver: str = "ddim") -> Tensor:
    """Deterministic solve from each sample's own timestep (B,) down to x̂0 in ``steps`` UNet calls.

    Timesteps go linearly from t to 0; each call predicts x̂0 = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t.
    ``ddim`` re-noises x̂0 to the next level with the same ε̂; ``dpm`` is DPM-Solver++(2M), which
    replaces x̂0 by the second-order extrapolation D = (1 + 1/2r)·x̂0 − 1/2r·x̂0_prev (r the ratio
    of successive log-SNR steps) from the second call on. Returns x̂0 (B, c, h, w).
    """
    if solver not in ("ddim", "dpm"):
        raise ValueError(f"unknown solver {solver!r} (ddim or dpm)")
    a = alphas_cumprod.to(x_t.device, torch.float32)
    lam = lambda ab: 0.5 * (ab.log() - (1 - ab).log())  # log(α/σ)
    fractions = torch.linspace(1.0, 0.0, steps + 1, device=x_t.device)
    x = x_t.float()
    prev_x0 = prev_h = None
    for k in range(steps):
        t_now = (t_index.float() * fractions[k]).round().long()
        t_next = (t_index.float() * fractions[k + 1]).round().long()
        eps = guided_eps(unet, x.to(x_t.dtype), t_now, cond, guidance_scale).float()
        a_now, a_next = a[t_now][:, None, None, None], a[t_next][:, None, None, None]
        x0 = (x - (1 - a_now).sqrt() * eps) / a_now.sqrt()
        h = lam(a_next) - lam(a_now)
        d = x0
        if solver == "dpm" and prev_x0 is not None:
            r = prev_h / h.clamp_min(1e-8)
            d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * prev_x0
        if k == steps - 1:
            return d.to(x_t.dtype)
        # x_next = σ_next/σ_now · x − α_next (e^{−h} − 1) · D  (DDIM when D = x̂0)
        x = ((1 - a_next) / (1 - a_now)).sqrt() * x - a_next.sqrt() * torch.expm1(-h) * d
        prev_x0, prev_h = x0, h
    return x.to(x_t.dtype)

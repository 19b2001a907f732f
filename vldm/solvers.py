"""The official SparseFusion teacher update: PLMS noise estimates with a stochastic posterior step.

From each sample's own timestep down to 0 on a linear grid, every step forms a multistep noise
estimate ε' (pseudo improved Euler on the first step, then Adams–Bashforth of orders 2, 3 and
4 over the previous raw estimates), predicts x̂0 from it (clipped to ±``clip_x0``), and moves
to the next level by *sampling* the DDPM posterior q(x_next | x_t, x̂0): mean
α_next·((1 − c)·x_t/α_t + c·x̂0), variance σ_next²·c, with c = 1 − SNR_t/SNR_next. The last
step returns the posterior mean at t = 0 (no noise). The first step evaluates the UNet twice
(at t and, for the Euler correction, at the next level), every later step once: ``steps + 1``
calls in all. The deterministic few-step solvers are :func:`vldm.diffusion.denoise_from`.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from torch import Tensor

from .diffusion import guided_eps


def stochastic_plms_calls(steps: int) -> int:
    """UNet evaluations of :func:`stochastic_plms_from` for ``steps`` steps (0 steps: none)."""
    return steps + 1 if steps > 0 else 0


def _multistep_eps(eps: Tensor, history: list[Tensor]) -> Tensor:
    """Adams–Bashforth combination of the newest ε (B, c, h, w) with up to 3 previous ones."""
    if len(history) == 1:
        return (3 * eps - history[-1]) / 2
    if len(history) == 2:
        return (23 * eps - 16 * history[-1] + 5 * history[-2]) / 12
    return (55 * eps - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24


@torch.no_grad()
def stochastic_plms_from(unet: UNet2DModel, alphas_cumprod: Tensor, x_t: Tensor, t_index: Tensor, cond: Tensor,
                         steps: int, guidance_scale: float = 1.0, clip_x0: float | None = 10.0,
                         generator: torch.Generator | None = None) -> Tensor:
    """Denoise x_t (B, c, h, w) from timesteps t_index (B,) to x̂0 in ``steps`` stochastic PLMS steps.

    ``steps = 0`` returns x_t itself (as the official code does below t = 0.01). Noise is drawn
    on the CPU from ``generator`` and moved to x_t's device.
    """
    if steps == 0:
        return x_t
    a = alphas_cumprod.to(x_t.device, torch.float32)
    fractions = torch.linspace(1.0, 0.0, steps + 1, device=x_t.device)
    grid = [(t_index.float() * f).round().long() for f in fractions]  # steps + 1 timesteps (B,)

    def eps_at(x: Tensor, t: Tensor) -> Tensor:
        return guided_eps(unet, x.to(x_t.dtype), t, cond, guidance_scale).float()

    def posterior(x: Tensor, eps: Tensor, t: Tensor, t_next: Tensor, last: bool) -> Tensor:
        ab, ab_next = a[t][:, None, None, None], a[t_next][:, None, None, None]
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt().clamp_min(1e-8)
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
        snr, snr_next = ab / (1 - ab), ab_next / (1 - ab_next)
        c = 1 - snr / snr_next
        mean = ab_next.sqrt() * ((1 - c) * x / ab.sqrt() + c * x0)
        if last:
            return mean
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device)
        return mean + ((1 - ab_next) * c).clamp_min(0).sqrt() * noise

    x = x_t.float()
    history: list[Tensor] = []
    for k in range(steps):
        t, t_next, last = grid[k], grid[k + 1], k == steps - 1
        eps = eps_at(x, t)
        if not history:  # pseudo improved Euler: average ε at t and at the Euler step's result
            eps_next = eps_at(posterior(x, eps, t, t_next, last), t_next)
            combined = (eps + eps_next) / 2
        else:
            combined = _multistep_eps(eps, history)
        x = posterior(x, combined, t, t_next, last)
        history = (history + [eps])[-3:]
    if clip_x0 is not None:
        x = x.clamp(-clip_x0, clip_x0)
    return x.to(x_t.dtype)

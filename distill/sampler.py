"""Ray samplers for instance fields, one interface: ``dense`` (any device) and ``occgrid`` (CUDA).

``dense``: stratified samples in the scene box, then importance samples from the coarse
weights (the coarse pass runs without gradients: it only places samples), composited with
nerfacc's dense path. ``occgrid``: nerfacc's ``OccGridEstimator`` skips empty space with an
occupancy grid that :meth:`update` refreshes from the field's density during training, and
marches with a fixed step; it needs nerfacc's CUDA build.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from scenes.render import BOX_HALF_SIZE, Composite, ray_box_intersect, render_rays

SamplerName = Literal["auto", "dense", "occgrid"]  # ray samplers (auto: occgrid on CUDA with nerfacc, else dense)
SAMPLERS = get_args(SamplerName)


@dataclass
class SamplerConfig:
    """Where samples go along each ray."""

    name: SamplerName = "auto"
    """dense (stratified + importance, any device), occgrid (nerfacc occupancy grid, CUDA) or auto."""
    n_coarse: int = 64
    """dense: stratified samples per ray (no gradient)."""
    n_fine: int = 64
    """dense: importance samples per ray, merged with the coarse ones for the final render."""
    grid_resolution: int = 128
    """occgrid: occupancy cells per side of the scene box."""
    march_steps: int = 512
    """occgrid: marching step = box diagonal / march_steps."""
    occupancy_threshold: float = 0.01
    """occgrid: cells whose opacity over one step stays below this are skipped."""


def occgrid_available() -> bool:
    """Whether nerfacc's CUDA ray marching can run here."""
    if not torch.cuda.is_available():
        return False
    try:
        from nerfacc.cuda._backend import _C  # the compiled (or JIT-built) extension
    except Exception:  # noqa: BLE001 — any failure to load the extension means no occgrid
        return False
    return _C is not None


class DenseSampler:
    """Stratified + importance samples on a dense [rays, samples] grid."""

    name = "dense"

    def __init__(self, cfg: SamplerConfig, half_size: float = BOX_HALF_SIZE):
        self.cfg, self.half_size = cfg, half_size

    def render(self, field: nn.Module, origins: Tensor, directions: Tensor, stratified: bool = False) -> Composite:
        """Composite of rays (R, 3) through ``field``."""
        return render_rays(field, origins, directions, self.cfg.n_coarse, self.cfg.n_fine, self.half_size,
                           stratified=stratified)

    def update(self, field: nn.Module, step: int) -> None:
        """Nothing to refresh."""


class OccGridSampler:
    """nerfacc ``OccGridEstimator`` marching (CUDA): empty cells are skipped, the rest sampled finely."""

    name = "occgrid"

    def __init__(self, cfg: SamplerConfig, half_size: float = BOX_HALF_SIZE, device: torch.device | str = "cuda"):
        from nerfacc import OccGridEstimator

        self.cfg, self.half_size = cfg, half_size
        aabb = torch.tensor([-half_size] * 3 + [half_size] * 3)
        self.estimator = OccGridEstimator(aabb, resolution=cfg.grid_resolution).to(device)
        self.step_size = 2 * half_size * 3**0.5 / cfg.march_steps

    def render(self, field: nn.Module, origins: Tensor, directions: Tensor, stratified: bool = False) -> Composite:
        """Composite of rays (R, 3) through ``field`` (packed samples; ``weights`` is per sample)."""
        def sigma_fn(t_starts, t_ends, ray_indices):
            x = origins[ray_indices] + directions[ray_indices] * ((t_starts + t_ends) / 2)[:, None]
            return field.density(x)

        def rgb_sigma_fn(t_starts, t_ends, ray_indices):
            x = origins[ray_indices] + directions[ray_indices] * ((t_starts + t_ends) / 2)[:, None]
            return field(x, directions[ray_indices])

        near, far, _ = ray_box_intersect(origins, directions, self.half_size)
        ray_indices, t_starts, t_ends = self.estimator.sampling(
            origins, directions, sigma_fn=sigma_fn, t_min=near, t_max=far, render_step_size=self.step_size,
            stratified=stratified)
        return composite_marched(t_starts, t_ends, ray_indices, origins.shape[0], rgb_sigma_fn)

    def update(self, field: nn.Module, step: int) -> None:
        """Refresh the occupancy grid from the field's density (every 16 steps, after a warm-up)."""
        self.estimator.update_every_n_steps(
            step=step, occ_eval_fn=lambda x: field.density(x) * self.step_size,
            occ_thre=self.cfg.occupancy_threshold)


def composite_marched(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor | None, n_rays: int,
                      rgb_sigma_fn) -> Composite:
    """nerfacc's ``rendering`` of marched samples as a :class:`Composite` (packed (S,), or (R, S) with no indices).

    nerfacc 0.5.3 already returns the expected depth Σ w·t / Σ w (normalised by the opacity), so
    it is kept as it is; dividing by the opacity again would inflate depth wherever opacity < 1.
    """
    from nerfacc import rendering

    rgb, opacity, depth, extras = rendering(t_starts, t_ends, ray_indices, n_rays=n_rays, rgb_sigma_fn=rgb_sigma_fn)
    return Composite(rgb, opacity, depth, extras["weights"])


_warned = False


def make_sampler(cfg: SamplerConfig, device: torch.device | str = "cpu",
                 half_size: float = BOX_HALF_SIZE) -> DenseSampler | OccGridSampler:
    """The configured sampler; ``auto`` is occgrid on CUDA with nerfacc's extension, else dense."""
    global _warned
    name = cfg.name
    on_cuda = torch.device(device).type == "cuda"
    if name == "auto":
        name = "occgrid" if on_cuda and occgrid_available() else "dense"
    if name == "occgrid":
        if not (on_cuda and occgrid_available()):
            if not _warned:
                warnings.warn("sampler occgrid needs CUDA and nerfacc's CUDA extension; using dense", stacklevel=2)
                _warned = True
            return DenseSampler(cfg, half_size)
        return OccGridSampler(cfg, half_size, device)
    if name == "dense":
        return DenseSampler(cfg, half_size)
    raise ValueError(f"unknown sampler {cfg.name!r} ({', '.join(SAMPLERS)})")

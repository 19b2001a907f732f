"""Ray samplers for instance fields, one interface: ``dense`` (any device) and ``occgrid`` (CUDA).

``dense``: stratified samples in the scene box, then importance samples from the coarse
weights (the coarse pass runs without gradients: it only places samples), composited with
nerfacc's dense path. With ``skip_empty`` (the default) a pure-PyTorch occupancy grid
(:mod:`distill.occupancy`), refreshed from the field's density as nerfacc's estimator is, drops
the samples in empty cells before the field is queried. ``occgrid``: nerfacc's
``OccGridEstimator`` skips empty space with an
occupancy grid that :meth:`update` refreshes from the field's density during training, and
marches with a fixed step; it needs nerfacc's CUDA build.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from scenes.co3d import Views
from scenes.render import BOX_HALF_SIZE, Composite, ray_box_intersect, render_rays

from .occupancy import OccupancyGrid

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
    skip_empty: bool = True
    """dense: skip the field on samples in cells a pure-PyTorch occupancy grid finds empty."""
    carve_inputs: bool = False
    """dense with skip_empty: also skip, from the start, the cells outside the input masks' visual hull."""
    skip_resolution: int = 32
    """dense with skip_empty: occupancy cells per side of the scene box (each update queries all of them)."""
    grid_resolution: int = 128
    """occgrid: occupancy cells per side of the scene box."""
    march_steps: int = 512
    """occgrid: marching step = box diagonal / march_steps."""
    occupancy_threshold: float = 0.01
    """occgrid and skip_empty: a cell is skipped while its opacity over one step stays below this (dense: diagonal / n_coarse)."""
    update_every: int = 16
    """occgrid and skip_empty: iterations between occupancy updates (nerfacc's n)."""
    occupancy_decay: float = 0.95
    """occgrid and skip_empty: each update keeps max(decay · old, new) per cell (nerfacc's ema_decay)."""


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
    """Stratified + importance samples on a dense [rays, samples] grid, empty cells skipped with ``skip_empty``."""

    name = "dense"

    def __init__(self, cfg: SamplerConfig, half_size: float = BOX_HALF_SIZE, device: torch.device | str = "cpu"):
        self.cfg, self.half_size = cfg, half_size
        self.grid = None
        if cfg.skip_empty:
            step = 2 * half_size * 3**0.5 / cfg.n_coarse
            self.grid = OccupancyGrid(cfg.skip_resolution, half_size, step, cfg.occupancy_threshold,
                                      cfg.occupancy_decay, cfg.update_every, device=device)

    def render(self, field: nn.Module, origins: Tensor, directions: Tensor, stratified: bool = False) -> Composite:
        """Composite of rays (R, 3) through ``field``."""
        return render_rays(field, origins, directions, self.cfg.n_coarse, self.cfg.n_fine, self.half_size,
                           stratified=stratified, occupied=None if self.grid is None else self.grid.occupied)

    def prepare(self, views: Views) -> None:
        """Carve the input masks' visual hull into the grid (with ``carve_inputs``)."""
        if self.grid is not None and self.cfg.carve_inputs:
            self.grid.carve(views.cameras, views.masks, views.valid)

    def update(self, field: nn.Module, step: int) -> None:
        """Refresh the occupancy grid from the field's density (every ``update_every`` steps)."""
        if self.grid is not None:
            self.grid.update(field.density, step)

    def state_dict(self) -> dict:
        """The occupancy grid's state (empty without ``skip_empty``)."""
        return {} if self.grid is None else self.grid.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        if self.grid is not None and state:
            self.grid.load_state_dict(state)


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

    def prepare(self, views: Views) -> None:
        """Nothing to prepare (nerfacc's estimator learns occupancy from the field alone)."""

    def update(self, field: nn.Module, step: int) -> None:
        """Refresh the occupancy grid from the field's density (every ``update_every`` steps, after a warm-up)."""
        self.estimator.update_every_n_steps(
            step=step, occ_eval_fn=lambda x: field.density(x) * self.step_size,
            occ_thre=self.cfg.occupancy_threshold, ema_decay=self.cfg.occupancy_decay, n=self.cfg.update_every)

    def state_dict(self) -> dict:
        """The estimator's occupancy state."""
        return self.estimator.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        if state:
            self.estimator.load_state_dict(state)


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
            return DenseSampler(cfg, half_size, device)
        return OccGridSampler(cfg, half_size, device)
    if name == "dense":
        return DenseSampler(cfg, half_size, device)
    raise ValueError(f"unknown sampler {cfg.name!r} ({', '.join(SAMPLERS)})")

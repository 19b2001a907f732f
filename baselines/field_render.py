"""Volume rendering of pixel-aligned fields through the shared ``scenes.render`` primitives."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from scenes.cameras import Cameras
from scenes.render import render_coarse_fine, render_image_chunks

from .pixel_field import PixelAlignedField, ViewFeatures


@dataclass
class FieldRender:
    """Per-ray results of rendering a pixel-aligned field (the fine pass when there is one)."""

    rgb: Tensor  # (R, 3)
    depth: Tensor  # (R, 1) expected distance along the ray, not normalised by opacity (DFM)
    opacity: Tensor  # (R, 1)
    features: Tensor  # (R, F) composited extra features (F may be 0)
    coarse_rgb: Tensor | None = None  # (R, 3) the coarse pass, kept for NeRF's coarse loss


@dataclass
class FieldImages:
    """Full images of a pixel-aligned field at T cameras."""

    rgb: Tensor  # (T, 3, H, W)
    depth: Tensor  # (T, 1, H, W)
    opacity: Tensor  # (T, 1, H, W)
    features: Tensor  # (T, F, H, W)


def render_field(field: PixelAlignedField, views: ViewFeatures, origins: Tensor, directions: Tensor,
                 n_coarse: int, n_fine: int = 0, stratified: bool = False,
                 generator: torch.Generator | None = None, projected: bool = False,
                 random_fine: bool | None = None) -> FieldRender:
    """Render rays (R, 3) through ``field`` conditioned on ``views``: coarse + importance samples.

    ``stratified`` jitters the coarse samples, ``random_fine`` draws the importance samples at
    random (default: as ``stratified``). ``projected``: ``views`` already went through
    ``field.project_maps`` (chunked rendering).
    """
    projected = views if projected else field.project_maps(views)

    def fn(points: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
        rgb, sigma, extra = field(projected, points, dirs, projected=True)
        return torch.cat([rgb, extra], dim=-1), sigma

    coarse, fine = render_coarse_fine(fn, origins, directions, n_coarse, n_fine, stratified=stratified,
                                      generator=generator, random_fine=random_fine)
    last = fine if fine is not None else coarse
    return FieldRender(last.rgb[:, :3], last.depth * last.opacity, last.opacity, last.rgb[:, 3:],
                       coarse.rgb[:, :3] if fine is not None else None)


def render_views(field: PixelAlignedField, views: ViewFeatures, targets: Cameras, n_coarse: int, n_fine: int = 0,
                 chunk: int = 4096, random_fine: bool = False,
                 generator: torch.Generator | None = None) -> FieldImages:
    """Full images at every target camera, rendered in chunks of rays (fixed coarse grid).

    ``random_fine``: importance samples at random quantiles (DFM), else at fixed mid-quantiles.
    """
    views = field.project_maps(views)

    def chunk_fn(o: Tensor, d: Tensor) -> dict[str, Tensor]:
        r = render_field(field, views, o, d, n_coarse, n_fine, projected=True, random_fine=random_fine,
                         generator=generator)
        return {"rgb": r.rgb, "depth": r.depth, "opacity": r.opacity, "features": r.features}

    images = render_image_chunks(targets, chunk_fn, chunk, device=views.maps.device)
    return FieldImages(images["rgb"], images["depth"], images["opacity"], images["features"])

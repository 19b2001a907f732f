"""Pixel-aligned sampling: project 3D points into views and sample image-space maps there."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def project_points(R: Tensor, t: Tensor, K: Tensor, points: Tensor, eps: float = 1e-4
                   ) -> tuple[Tensor, Tensor]:
    """Project points (..., P, 3) with cameras R (..., 3, 3), t (..., 3), K (..., 3, 3).

    Returns pixel coordinates uv (..., P, 2) and camera depth z (..., P); points behind the
    camera get z clamped to ``eps`` for the division (their z is returned unclamped).
    """
    x = torch.einsum("...ij,...pj->...pi", R, points) + t[..., None, :]
    z = x[..., 2]
    uvw = torch.einsum("...ij,...pj->...pi", K, x)
    uv = uvw[..., :2] / uvw[..., 2:3].clamp_min(eps)
    return uv, z


def sample_at_pixels(maps: Tensor, uv: Tensor, height: int, width: int) -> Tensor:
    """Bilinearly sample maps (V, C, h, w) covering a height×width image at uv (V, P, 2) -> (V, P, C).

    Pixel coordinates use the top-left corner at (0, 0); outside the image the border value is used.
    """
    scale = torch.tensor([2.0 / width, 2.0 / height], device=uv.device, dtype=uv.dtype)
    grid = (uv * scale - 1.0)[:, :, None, :].to(maps.dtype)  # (V, P, 1, 2)
    out = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[..., 0].transpose(1, 2)

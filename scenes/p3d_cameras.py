"""Conversion between PyTorch3D / CO3D viewpoints and OpenCV :class:`Cameras`.

PyTorch3D uses row vectors (``X_cam = X_world @ R + T``), camera axes +x left, +y up, +z
forward, and NDC intrinsics. With ``F = diag(-1, -1, 1)``: ``R_cv = F Rᵀ`` and ``t_cv = F T``.

Intrinsics for a W×H image, in pixels with the top-left pixel corner at (0, 0):

- ``ndc_isotropic`` (s = min(W, H)/2): ``f_px = f·s``, ``c_px = (W/2, H/2) − p·s``;
- ``ndc_norm_image_bounds``: ``fx = fx·W/2``, ``fy = fy·H/2``, ``c_px = (1 − p)·(W/2, H/2)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .cameras import Cameras

INTRINSICS_FORMATS = ("ndc_norm_image_bounds", "ndc_isotropic")

_FLIP = (-1.0, -1.0, 1.0)


def _ndc_scales(height: int, width: int, fmt: str) -> tuple[float, float]:
    """Pixels per NDC unit along x and y for a given intrinsics format."""
    if fmt == "ndc_isotropic":
        s = min(width, height) / 2.0
        return s, s
    if fmt == "ndc_norm_image_bounds":
        return width / 2.0, height / 2.0
    raise ValueError(f"unknown intrinsics_format {fmt!r}; expected one of {INTRINSICS_FORMATS}")


def cameras_from_pytorch3d(
    R: Tensor,
    T: Tensor,
    focal_length: Tensor,
    principal_point: Tensor,
    height: int,
    width: int,
    intrinsics_format: str = "ndc_norm_image_bounds",
) -> Cameras:
    """OpenCV cameras from PyTorch3D R (N,3,3), T (N,3), NDC focal (N,2) and principal point (N,2)."""
    sx, sy = _ndc_scales(height, width, intrinsics_format)
    flip = torch.tensor(_FLIP, dtype=R.dtype, device=R.device)
    R_cv = flip[None, :, None] * R.transpose(1, 2)
    t_cv = flip[None, :] * T
    K = torch.zeros(R.shape[0], 3, 3, dtype=R.dtype, device=R.device)
    K[:, 0, 0] = focal_length[:, 0] * sx
    K[:, 1, 1] = focal_length[:, 1] * sy
    K[:, 0, 2] = width / 2.0 - principal_point[:, 0] * sx
    K[:, 1, 2] = height / 2.0 - principal_point[:, 1] * sy
    K[:, 2, 2] = 1.0
    return Cameras(R_cv, t_cv, K, height, width)


def cameras_to_pytorch3d(
    cameras: Cameras, intrinsics_format: str = "ndc_isotropic"
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Inverse of :func:`cameras_from_pytorch3d`: R (N,3,3), T (N,3), focal (N,2), principal point (N,2).

    Skew in K is not representable in PyTorch3D and must be zero.
    """
    K = cameras.K
    if (K[:, 0, 1].abs() > 1e-9).any():
        raise ValueError("PyTorch3D cameras cannot represent a skewed K")
    sx, sy = _ndc_scales(cameras.height, cameras.width, intrinsics_format)
    flip = torch.tensor(_FLIP, dtype=K.dtype, device=K.device)
    R = (flip[None, :, None] * cameras.R).transpose(1, 2)
    T = flip[None, :] * cameras.t
    focal = torch.stack([K[:, 0, 0] / sx, K[:, 1, 1] / sy], dim=-1)
    principal = torch.stack(
        [(cameras.width / 2.0 - K[:, 0, 2]) / sx, (cameras.height / 2.0 - K[:, 1, 2]) / sy], dim=-1
    )
    return R, T, focal, principal

"""Scene normalisation and camera paths fitted to a set of cameras.

Normalisation (on by default for every dataset): centre = least-squares point nearest to all
optical axes; scale so the mean camera distance to it is 3.0. The similarity is returned so
that results can be mapped back to the dataset's own world frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .cameras import Cameras, look_at

MEAN_CAMERA_DISTANCE = 3.0


@dataclass
class Similarity:
    """``x_normalised = scale · (x_world − center)``."""

    center: Tensor  # (3,)
    scale: float

    def apply(self, points: Tensor) -> Tensor:
        """World points (..., 3) -> normalised frame."""
        return (points - self.center.to(points)) * self.scale

    def invert(self, points: Tensor) -> Tensor:
        """Normalised points (..., 3) -> the dataset's world frame."""
        return points / self.scale + self.center.to(points)

    def apply_cameras(self, cameras: Cameras) -> Cameras:
        """Cameras expressed in the normalised frame (same images, same K)."""
        c = self.center.to(cameras.t)
        t = self.scale * (cameras.t + cameras.R @ c)
        return Cameras(cameras.R, t, cameras.K, cameras.height, cameras.width)

    def to_dict(self) -> dict:
        return {"center": [float(x) for x in self.center], "scale": float(self.scale)}


def nearest_point_to_lines(origins: Tensor, directions: Tensor) -> Tensor:
    """Least-squares point (3,) nearest to the lines o_i + s·d_i; origins, directions (N, 3).

    Solves Σ (I − d dᵀ) p = Σ (I − d dᵀ) o. Raises when the lines are (nearly) parallel.
    """
    d = directions / directions.norm(dim=-1, keepdim=True)
    eye = torch.eye(3, dtype=d.dtype, device=d.device)
    proj = eye[None] - d[:, :, None] * d[:, None, :]  # (N, 3, 3)
    A = proj.sum(0)
    b = (proj @ origins[:, :, None]).sum(0)[:, 0]
    if torch.linalg.cond(A) > 1e8:
        raise ValueError("the optical axes are (nearly) parallel: no point is nearest to all")
    return torch.linalg.solve(A, b)


def normalization_for(cameras: Cameras, distance: float = MEAN_CAMERA_DISTANCE) -> Similarity:
    """Similarity that puts the axes' nearest point at the origin and the cameras at mean distance."""
    center = nearest_point_to_lines(cameras.centers, cameras.forward)
    mean_dist = (cameras.centers - center).norm(dim=-1).mean()
    return Similarity(center, float(distance / mean_dist))


def normalize_cameras(
    cameras: Cameras, distance: float = MEAN_CAMERA_DISTANCE
) -> tuple[Cameras, Similarity]:
    """Normalised cameras and the similarity that produced them."""
    sim = normalization_for(cameras, distance)
    return sim.apply_cameras(cameras), sim


def fit_circle(centers: Tensor) -> tuple[Tensor, Tensor, Tensor, float]:
    """Fit a plane and a circle in it to points (N, 3), N ≥ 3.

    Returns the circle centre (3,), unit normal (3,), in-plane unit axis e1 (3,) and radius.
    """
    mean = centers.mean(0)
    _, _, vh = torch.linalg.svd(centers - mean)
    e1, e2, normal = vh[0], vh[1], vh[2]
    xy = torch.stack([(centers - mean) @ e1, (centers - mean) @ e2], dim=-1)  # (N, 2)
    # Algebraic (Kåsa) fit: x² + y² = 2a x + 2b y + c.
    A = torch.cat([2 * xy, torch.ones_like(xy[:, :1])], dim=-1)
    rhs = (xy**2).sum(-1, keepdim=True)
    sol = torch.linalg.lstsq(A, rhs).solution[:, 0]
    a, b, c = sol[0], sol[1], sol[2]
    radius = float(torch.sqrt(torch.clamp(c + a**2 + b**2, min=1e-12)))
    center = mean + a * e1 + b * e2
    return center, normal, e1, radius


def circle_path(cameras: Cameras, n: int = 50, elevation_jitter: float = 0.0,
                generator: torch.Generator | None = None) -> Cameras:
    """``n`` cameras on the circle through the camera centres, looking at the axes' point.

    Uses the first camera's intrinsics and image size; image-up follows the cameras' mean up
    vector projected on the plane normal. With fewer than 3 cameras the circle is the one
    around the look-at point through the cameras, in the plane spanned by their centres and up.
    ``elevation_jitter`` > 0 tilts each camera's offset from the look-at point towards or away
    from the plane normal by an angle drawn uniformly in ±elevation_jitter radians (SparseFusion's
    fusion cameras: 0.17), from ``generator`` (drawn on the CPU).
    """
    centers = cameras.centers
    target = nearest_point_to_lines(centers, cameras.forward)
    mean_up = cameras.up.mean(0)
    if len(cameras) >= 3:
        c, normal, e1, radius = fit_circle(centers)
    else:
        normal = mean_up / mean_up.norm()
        offset = centers[0] - target
        c = target + (offset @ normal) * normal
        e1 = centers[0] - c
        radius = float(e1.norm())
        e1 = e1 / e1.norm()
    if normal @ mean_up < 0:
        normal = -normal
    e2 = torch.linalg.cross(normal, e1)
    angles = torch.arange(n, dtype=centers.dtype, device=centers.device) * (2 * math.pi / n)
    eye = c + radius * (torch.cos(angles)[:, None] * e1 + torch.sin(angles)[:, None] * e2)
    if elevation_jitter > 0:
        theta = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * elevation_jitter
        eye = target + tilt_towards(eye - target, normal, theta.to(eye))
    return look_at(eye, target, normal, cameras.K[0], cameras.height, cameras.width)


def tilt_towards(offsets: Tensor, normal: Tensor, theta: Tensor) -> Tensor:
    """Offsets (N, 3) rotated by theta (N,) radians in the plane they span with ``normal`` (3,), towards it.

    The rotation axis is offset × normal (Rodrigues' formula with the axis ⟂ the offset), so
    lengths are kept and a positive angle raises the elevation above the plane ⟂ normal.
    """
    axis = torch.linalg.cross(offsets, normal.expand_as(offsets))
    axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    towards = torch.linalg.cross(axis, offsets)  # ⟂ offset, in its plane with the normal, same length
    return offsets * theta.cos()[:, None] + towards * theta.sin()[:, None]

"""Batched pinhole cameras in the OpenCV convention.

``x_cam = R @ x_world + t``; camera x right, y down, z forward. ``K`` is in pixels with the
top-left pixel *corner* at (0, 0), so pixel (i, j) (row i, column j) has its centre at
(u, v) = (j + 0.5, i + 0.5), and every ray goes through a pixel centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Cameras:
    """N cameras sharing one image size."""

    R: Tensor  # (N, 3, 3) world -> camera rotation
    t: Tensor  # (N, 3) world -> camera translation
    K: Tensor  # (N, 3, 3) intrinsics in pixels
    height: int
    width: int

    def __post_init__(self) -> None:
        if self.R.ndim == 2:
            self.R, self.t, self.K = self.R[None], self.t[None], self.K[None]
        n = self.R.shape[0]
        if self.R.shape != (n, 3, 3) or self.t.shape != (n, 3) or self.K.shape != (n, 3, 3):
            raise ValueError(
                f"Cameras expects R (N,3,3), t (N,3), K (N,3,3); got {tuple(self.R.shape)}, "
                f"{tuple(self.t.shape)}, {tuple(self.K.shape)}"
            )
        self.height, self.width = int(self.height), int(self.width)

    # ----------------------------------------------------------------- containers
    def __len__(self) -> int:
        return self.R.shape[0]

    def __getitem__(self, index) -> "Cameras":
        """Select cameras by int, slice, list or boolean/long tensor."""
        if isinstance(index, int):
            index = [index]
        return Cameras(self.R[index], self.t[index], self.K[index], self.height, self.width)

    @staticmethod
    def cat(cameras: list["Cameras"]) -> "Cameras":
        """Concatenate cameras of the same image size."""
        sizes = {(c.height, c.width) for c in cameras}
        if len(sizes) != 1:
            raise ValueError(f"cannot concatenate cameras of different image sizes {sizes}")
        h, w = sizes.pop()
        return Cameras(
            torch.cat([c.R for c in cameras]), torch.cat([c.t for c in cameras]),
            torch.cat([c.K for c in cameras]), h, w,
        )

    def to(self, device=None, dtype=None) -> "Cameras":
        """Move (and optionally cast) all tensors."""
        return Cameras(
            self.R.to(device=device, dtype=dtype), self.t.to(device=device, dtype=dtype),
            self.K.to(device=device, dtype=dtype), self.height, self.width,
        )

    @property
    def device(self) -> torch.device:
        return self.R.device

    # ----------------------------------------------------------------- geometry
    @property
    def centers(self) -> Tensor:
        """Camera centres in world coordinates, (N, 3) = -Rᵀ t."""
        return -torch.einsum("nji,nj->ni", self.R, self.t)

    @property
    def forward(self) -> Tensor:
        """Unit optical axes (camera +z) in world coordinates, (N, 3)."""
        return self.R[:, 2, :]

    @property
    def up(self) -> Tensor:
        """Unit 'up' of the image (camera -y) in world coordinates, (N, 3)."""
        return -self.R[:, 1, :]

    def world_to_camera(self, points: Tensor) -> Tensor:
        """Points (N, P, 3) or (P, 3) in world -> (N, P, 3) in camera coordinates."""
        if points.ndim == 2:
            points = points.expand(len(self), *points.shape)
        return torch.einsum("nij,npj->npi", self.R, points) + self.t[:, None, :]

    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Project world points (N, P, 3) or (P, 3) -> pixels uv (N, P, 2) and depth z (N, P)."""
        x = self.world_to_camera(points)
        z = x[..., 2]
        uvw = torch.einsum("nij,npj->npi", self.K, x)
        return uvw[..., :2] / uvw[..., 2:3], z

    def pixel_rays(self, uv: Tensor) -> tuple[Tensor, Tensor]:
        """Rays through pixel coordinates uv (N, P, 2) -> origins and unit directions (N, P, 3)."""
        ones = torch.ones_like(uv[..., :1])
        pix = torch.cat([uv, ones], dim=-1)  # (N, P, 3)
        d_cam = torch.linalg.solve(self.K, pix.transpose(1, 2)).transpose(1, 2)
        d_world = torch.einsum("nji,npj->npi", self.R, d_cam)  # Rᵀ d
        d_world = d_world / d_world.norm(dim=-1, keepdim=True)
        origins = self.centers[:, None, :].expand_as(d_world)
        return origins, d_world

    def pixel_centers(self) -> Tensor:
        """Pixel-centre coordinates (H, W, 2) as (u, v) = (j + 0.5, i + 0.5)."""
        v, u = torch.meshgrid(
            torch.arange(self.height, device=self.device, dtype=self.R.dtype) + 0.5,
            torch.arange(self.width, device=self.device, dtype=self.R.dtype) + 0.5,
            indexing="ij",
        )
        return torch.stack([u, v], dim=-1)

    def rays(self) -> tuple[Tensor, Tensor]:
        """Rays through every pixel centre: origins and unit directions (N, H, W, 3)."""
        uv = self.pixel_centers().reshape(1, -1, 2).expand(len(self), -1, -1)
        o, d = self.pixel_rays(uv)
        shape = (len(self), self.height, self.width, 3)
        return o.reshape(shape), d.reshape(shape)

    # ----------------------------------------------------------------- image ops
    def crop(self, x0: float, y0: float, width: int, height: int) -> "Cameras":
        """Cameras of the crop [x0, x0+width) × [y0, y0+height): the principal point moves."""
        K = self.K.clone()
        K[:, 0, 2] -= x0
        K[:, 1, 2] -= y0
        return Cameras(self.R, self.t, K, height, width)

    def resize_scale(self, height: int, width: int) -> float:
        """Aspect-preserving scale used by :meth:`resize`: min(newW/W, newH/H)."""
        return min(width / self.width, height / self.height)

    def resize(self, height: int, width: int) -> "Cameras":
        """Aspect-preserving resize to a height×width canvas, image pasted at the top-left.

        Focal length and principal point are multiplied by ``min(newW/W, newH/H)``; the part
        of the canvas not covered by the scaled image is outside the valid region.
        """
        s = self.resize_scale(height, width)
        K = self.K.clone()
        K[:, :2, :] *= s
        return Cameras(self.R, self.t, K, height, width)

    def scaled(self, factor: float) -> "Cameras":
        """Same view at ``factor`` × the resolution (e.g. 0.5 for half-resolution rendering)."""
        return self.resize(round(self.height * factor), round(self.width * factor))


def look_at_rotation(eye: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """OpenCV world->camera rotations (N, 3, 3) for cameras at eye (N,3) looking at target.

    ``up`` (3,) or (N, 3) is the world direction that appears up in the image (camera -y).
    """
    z = target - eye
    z = z / z.norm(dim=-1, keepdim=True)
    up = up.expand_as(z).to(z)
    x = torch.linalg.cross(z, up)  # right = forward × up
    x_norm = x.norm(dim=-1, keepdim=True)
    if (x_norm < 1e-8).any():
        raise ValueError("look_at: viewing direction is parallel to 'up'")
    x = x / x_norm
    y = torch.linalg.cross(z, x)
    return torch.stack([x, y, z], dim=1)  # rows are the camera axes in world coordinates


def intrinsics_from_fov(fov_y_deg: float, height: int, width: int, dtype=torch.float32) -> Tensor:
    """Pinhole K (3, 3) with vertical field of view fov_y and the principal point at the centre."""
    f = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
    return torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=dtype)


def look_at(
    eye: Tensor, target: Tensor, up: Tensor, K: Tensor, height: int, width: int
) -> Cameras:
    """Cameras at eye (N, 3) looking at target (3,) or (N, 3) with image-up ``up``."""
    target = target.expand_as(eye).to(eye)
    R = look_at_rotation(eye, target, up)
    t = -torch.einsum("nij,nj->ni", R, eye)
    K = K.expand(eye.shape[0], 3, 3).to(eye)
    return Cameras(R, t, K.clone(), height, width)


def plucker(origins: Tensor, directions: Tensor) -> Tensor:
    """Plücker coordinates (..., 6) = (d, o × d) of rays with unit directions d."""
    return torch.cat([directions, torch.linalg.cross(origins, directions, dim=-1)], dim=-1)


def is_rotation(R: Tensor, tol: float = 1e-4) -> Tensor:
    """Whether each (…, 3, 3) matrix is a proper rotation: RᵀR = I and det R = 1, to ``tol``."""
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    ortho = (R.transpose(-1, -2) @ R - eye).abs().amax(dim=(-1, -2)) <= tol
    return ortho & ((torch.linalg.det(R) - 1).abs() <= tol)


def resize_views(images: Tensor, cameras: "Cameras", size: int) -> tuple[Tensor, "Cameras"]:
    """Images (N, C, H, W) resized (bilinear, antialiased) to size×size, with their cameras rescaled."""
    import torch.nn.functional as F

    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return images, cameras.resize(size, size)

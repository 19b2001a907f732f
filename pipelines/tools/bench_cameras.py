"""The synthetic camera ring every benchmark times its models on (no dataset needed)."""

from __future__ import annotations

import torch

from scenes.cameras import Cameras, intrinsics_from_fov, look_at


def ring_cameras(n: int, size: int, device) -> Cameras:
    """``n`` cameras of ``size``² pixels on a ring at distance ≈3 around the origin, looking at it."""
    a = torch.arange(n, dtype=torch.float32) * 6.2831853 / n
    eye = 3.0 * torch.stack([a.cos() * 0.9, a.sin() * 0.9, torch.full_like(a, 0.42)], -1)  # (n, 3)
    cams = look_at(eye, torch.zeros(3), torch.tensor([0.0, 0, 1]), intrinsics_from_fov(42.0, size, size), size, size)
    return cams.to(device)

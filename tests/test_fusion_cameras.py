"""Fusion cameras: the circle fitted to the inputs or to all the sequence's cameras, elevation jitter."""

import math

import pytest
import torch

from pipelines.reconstruction.fit import fusion_cameras
from scenes.cameras import intrinsics_from_fov, look_at
from scenes.errors import UserError
from scenes.normalize import circle_path, fit_circle

D = torch.float64
UP = torch.tensor([0.0, 0, 1], dtype=D)


def _orbit(n=8, radius=3.0):
    """Cameras around the origin whose elevation follows 25° ± 15° (the synthetic data's path)."""
    az = torch.arange(n, dtype=D) * 2 * math.pi / n
    el = torch.deg2rad(25 + 15 * torch.sin(az + 0.4))
    eye = radius * torch.stack([el.cos() * az.cos(), el.cos() * az.sin(), el.sin()], -1)
    return look_at(eye, torch.zeros(3, dtype=D), UP, intrinsics_from_fov(40, 32, 32, D), 32, 32)


def _elevation(cams, normal):
    c = cams.centers
    return torch.asin((c @ normal) / c.norm(dim=-1))


def test_circle_fit_all_uses_every_camera_and_inputs_only_the_inputs():
    cams = _orbit()
    inputs, targets = cams[[0, 3]], cams[[1, 2, 4, 5, 6, 7]]
    all_cams = fusion_cameras(inputs, targets, 10, circle_fit="all")
    assert len(all_cams) == 2 + 10 + 6
    center, normal, _, radius = fit_circle(cams.centers)
    ring = all_cams[list(range(2, 12))].centers
    torch.testing.assert_close((ring - center).norm(dim=-1), torch.full((10,), radius, dtype=D))
    torch.testing.assert_close((ring - center) @ normal, torch.zeros(10, dtype=D), atol=1e-9, rtol=0)
    through_inputs = fusion_cameras(inputs, targets, 10)[list(range(2, 12))].centers
    torch.testing.assert_close(through_inputs[0], inputs.centers[0])  # today's circle: through the 2 inputs
    assert not torch.allclose(through_inputs, ring)
    # without targets the fit falls back to the inputs
    torch.testing.assert_close(fusion_cameras(inputs, None, 10, circle_fit="all").centers,
                               fusion_cameras(inputs, None, 10).centers)
    with pytest.raises(UserError, match="circle_fit"):
        fusion_cameras(inputs, targets, 10, circle_fit="targets")


def test_elevation_jitter_is_uniform_within_the_bound_and_keeps_distance_and_aim():
    cams = _orbit()
    plain = circle_path(cams, 200)
    jit = circle_path(cams, 200, elevation_jitter=0.17, generator=torch.Generator().manual_seed(0))
    _, normal, _, _ = fit_circle(cams.centers)
    normal = normal if normal @ UP > 0 else -normal
    target = torch.zeros(3, dtype=D)
    delta = _elevation(jit, normal) - _elevation(plain, normal)
    assert delta.abs().max() <= 0.17 + 1e-9 and delta.abs().max() > 0.15 and delta.std() > 0.07
    torch.testing.assert_close(jit.centers.norm(dim=-1), plain.centers.norm(dim=-1))
    uv, z = jit.project(target[None])
    torch.testing.assert_close(uv, torch.full((200, 1, 2), 16.0, dtype=D))
    assert (z > 0).all() and (jit.up @ normal > 0).all()
    again = circle_path(cams, 200, elevation_jitter=0.17, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again.centers, jit.centers)

"""Scene normalisation and the circle path fitted to cameras."""

import math

import torch

from scenes.cameras import intrinsics_from_fov, look_at
from scenes.normalize import circle_path, fit_circle, nearest_point_to_lines, normalize_cameras

D = torch.float64


def _ring(center, radius, n=6, height=1.0):
    a = torch.arange(n, dtype=D) * 2 * math.pi / n + 0.3
    eye = torch.stack([radius * a.cos(), radius * a.sin(), torch.full_like(a, height)], -1) + center
    return look_at(eye, center, torch.tensor([0.0, 0, 1], dtype=D), intrinsics_from_fov(40, 32, 32, D), 32, 32)


def test_nearest_point_to_lines_recovers_the_common_point():
    p = torch.tensor([0.3, -1.2, 2.0], dtype=D)
    d = torch.randn(5, 3, dtype=D, generator=torch.Generator().manual_seed(0))
    o = p + 2.0 * d
    torch.testing.assert_close(nearest_point_to_lines(o, d), p)


def test_normalisation_centres_and_scales_and_inverts():
    center = torch.tensor([5.0, -2.0, 1.0], dtype=D)
    cams = _ring(center, radius=7.0)
    norm, sim = normalize_cameras(cams)
    torch.testing.assert_close(sim.center, center)
    torch.testing.assert_close(norm.centers.norm(dim=-1).mean(), torch.tensor(3.0, dtype=D))
    # the same world point projects to the same pixel before and after
    x = torch.tensor([[5.2, -1.9, 1.1]], dtype=D)
    uv0, _ = cams.project(x)
    uv1, _ = norm.project(sim.apply(x))
    torch.testing.assert_close(uv0, uv1)
    torch.testing.assert_close(sim.invert(sim.apply(x)), x)


def test_circle_fit_and_path():
    center = torch.tensor([1.0, 2.0, 0.5], dtype=D)
    cams = _ring(center, radius=4.0, n=5, height=2.0)
    c, normal, _, r = fit_circle(cams.centers)
    torch.testing.assert_close(c, center + torch.tensor([0, 0, 2.0], dtype=D))
    assert abs(r - 4.0) < 1e-9 and abs(abs(normal[2].item()) - 1) < 1e-9
    path = circle_path(cams, n=50)
    assert len(path) == 50
    torch.testing.assert_close((path.centers - c).norm(dim=-1), torch.full((50,), 4.0, dtype=D))
    uv, z = path.project(center[None])  # every path camera looks at the target
    torch.testing.assert_close(uv, torch.full((50, 1, 2), 16.0, dtype=D))
    assert (z > 0).all() and (path.up[:, 2] > 0).all()  # upright


def test_circle_path_from_two_cameras():
    cams = _ring(torch.zeros(3, dtype=D), radius=3.0, n=6)[[0, 2]]
    path = circle_path(cams, n=8)
    uv, _ = path.project(torch.zeros(1, 3, dtype=D))
    torch.testing.assert_close(uv, torch.full((8, 1, 2), 16.0, dtype=D))
    torch.testing.assert_close(path.centers[0], cams.centers[0])

"""Camera conventions against the reference vectors and geometric identities."""

import json
import math

import pytest
import torch

from scenes.cameras import Cameras, intrinsics_from_fov, is_rotation, look_at, plucker
from scenes.p3d_cameras import cameras_from_pytorch3d, cameras_to_pytorch3d

D = torch.float64


@pytest.fixture
def vectors(data_dir):
    return json.loads((data_dir / "co3d_camera_vectors.json").read_text())


def _t(x):
    return torch.tensor(x, dtype=D)


def _from_case(vectors, case):
    h, w = vectors["image_size_hw"]
    return cameras_from_pytorch3d(
        _t([vectors["pytorch3d_R"]]), _t([vectors["pytorch3d_T"]]),
        _t([case["focal_length"]]), _t([case["principal_point"]]), h, w, case["intrinsics_format"],
    )


@pytest.mark.parametrize("case_index", [0, 1])
def test_pytorch3d_to_opencv_matches_reference(vectors, case_index):
    cam = _from_case(vectors, vectors["cases"][case_index])
    exp = vectors["expected_opencv"]
    torch.testing.assert_close(cam.K[0], _t(exp["K"]), atol=1e-6, rtol=0)
    torch.testing.assert_close(cam.R[0], _t(exp["R_cv"]), atol=1e-6, rtol=0)
    torch.testing.assert_close(cam.t[0], _t(exp["t_cv"]), atol=1e-6, rtol=0)
    torch.testing.assert_close(cam.centers[0], _t(exp["camera_center_world"]), atol=1e-6, rtol=0)


def test_projection_matches_reference(vectors):
    cam = _from_case(vectors, vectors["cases"][0])
    uv, z = cam.project(_t([vectors["projection_check"]["X_world"]]))
    torch.testing.assert_close(uv[0, 0], _t(vectors["projection_check"]["uv_pixels"]), atol=1e-6, rtol=0)
    assert z.item() > 0


def test_crop_then_resize_matches_reference(vectors):
    cam = _from_case(vectors, vectors["cases"][0])
    ref = vectors["crop_then_resize"]
    x, y, w, h = ref["crop_box_xywh"]
    cropped = cam.crop(x, y, w, h)
    torch.testing.assert_close(cropped.K[0], _t(ref["K_after_crop"]), atol=1e-6, rtol=0)
    assert (cropped.height, cropped.width) == (h, w)
    rh, rw = ref["resize_to_hw"]
    assert cropped.resize_scale(rh, rw) == pytest.approx(ref["scale"], abs=1e-12)
    resized = cropped.resize(rh, rw)
    torch.testing.assert_close(resized.K[0], _t(ref["K_after_resize"]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("fmt", ["ndc_isotropic", "ndc_norm_image_bounds"])
def test_pytorch3d_round_trip_non_square(fmt):
    g = torch.Generator().manual_seed(0)
    R = torch.linalg.qr(torch.randn(4, 3, 3, generator=g, dtype=D))[0]
    R = R * torch.linalg.det(R)[:, None, None]
    K = _t([[[500.0, 0, 310.0], [0, 470.0, 250.0], [0, 0, 1]]]).repeat(4, 1, 1)
    cam = Cameras(R, torch.randn(4, 3, generator=g, dtype=D), K, 480, 640)
    back = cameras_from_pytorch3d(*cameras_to_pytorch3d(cam, fmt), 480, 640, fmt)
    for a, b in ((back.R, cam.R), (back.t, cam.t), (back.K, cam.K)):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=0)


def test_rays_pass_through_pixel_centres():
    K = intrinsics_from_fov(40.0, 6, 8, dtype=D)
    cam = look_at(_t([[0.3, -3.0, 1.0], [2.0, 2.0, 2.0]]), _t([0.0, 0, 0]), _t([0.0, 0, 1]), K, 6, 8)
    o, d = cam.rays()
    assert o.shape == d.shape == (2, 6, 8, 3)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(2, 6, 8, dtype=D))
    pts = (o + 2.5 * d).reshape(2, -1, 3)
    uv, z = cam.project(pts)
    expected = cam.pixel_centers().reshape(-1, 2)
    torch.testing.assert_close(uv, expected.expand(2, -1, -1), atol=1e-9, rtol=0)
    # top-left pixel centre is (0.5, 0.5); row index grows downward (camera +y).
    assert expected[0].tolist() == [0.5, 0.5] and expected[8].tolist() == [0.5, 1.5]


def test_look_at_orientation():
    K = intrinsics_from_fov(42.0, 64, 64, dtype=D)
    eye = _t([[3.0, 0.0, 0.0]])
    cam = look_at(eye, _t([0.0, 0, 0]), _t([0.0, 0, 1]), K, 64, 64)
    assert is_rotation(cam.R).all()
    torch.testing.assert_close(cam.forward[0], _t([-1.0, 0, 0]))
    torch.testing.assert_close(cam.up[0], _t([0.0, 0, 1]))
    uv, _ = cam.project(_t([[0.0, 0, 0], [0.0, 0, 0.5]]))
    torch.testing.assert_close(uv[0, 0], _t([32.0, 32.0]))
    assert uv[0, 1, 1] < 32  # a point above the target appears higher in the image (smaller v)
    f = 32 / math.tan(math.radians(21))
    assert cam.K[0, 0, 0].item() == pytest.approx(f)


def test_plucker_is_invariant_to_the_point_on_the_ray():
    o = _t([[1.0, 2.0, 3.0]])
    d = _t([[0.0, 0.6, 0.8]])
    torch.testing.assert_close(plucker(o, d), plucker(o + 1.7 * d, d))
    assert plucker(o, d).shape == (1, 6)


def test_is_rotation_rejects_reflections_and_scales():
    assert is_rotation(torch.eye(3, dtype=D)).item()
    assert not is_rotation(torch.diag(_t([1.0, 1.0, -1.0]))).item()
    assert not is_rotation(1.01 * torch.eye(3, dtype=D)).item()

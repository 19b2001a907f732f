"""Camera files for custom input: frames matched to images by path, subsets by index, distortion refused."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from scenes.cameras import intrinsics_from_fov, look_at
from scenes.co3d import CO3DOptions
from scenes.custom import load_custom_views, match_images, read_camera_file
from scenes.errors import UserError

N, SIZE = 6, 16
RAW = CO3DOptions(crop=False, image_size=None, normalize=False, masked=False)  # cameras and pixels as written


def _cameras():
    a = torch.arange(N, dtype=torch.float64) * 2 * math.pi / N
    eye = 3.0 * torch.stack([a.cos(), a.sin(), torch.full_like(a, 0.5)], -1)
    return look_at(eye, torch.zeros(3, dtype=torch.float64), torch.tensor([0, 0, 1.0], dtype=torch.float64),
                   intrinsics_from_fov(45.0, SIZE, SIZE, torch.float64), SIZE, SIZE)


def _write_images(folder):
    """Frame i's image is a flat grey of level 10 * (i + 1) with a full alpha channel."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i in range(N):
        Image.fromarray(np.full((SIZE, SIZE, 4), [10 * (i + 1)] * 3 + [255], np.uint8)).save(folder / "images" / f"f{i}.png")


def _transforms(folder, suffix="", **top):
    """A nerfstudio transforms.json of the cameras (OpenGL camera-to-world), frames named images/f<i><suffix>."""
    cams, frames = _cameras(), []
    for i in range(N):
        c2w = torch.eye(4, dtype=torch.float64)
        c2w[:3, :3] = cams.R[i].T @ torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
        c2w[:3, 3] = -cams.R[i].T @ cams.t[i]
        frames.append({"file_path": f"images/f{i}{suffix}", "transform_matrix": c2w.tolist()})
    K = cams.K[0]
    data = {"fl_x": K[0, 0].item(), "fl_y": K[1, 1].item(), "cx": K[0, 2].item(), "cy": K[1, 2].item(),
            "w": SIZE, "h": SIZE, **top, "frames": frames}
    (folder / "transforms.json").write_text(json.dumps(data))
    return folder / "transforms.json"


def _opencv(folder, **extra):
    cams = _cameras()
    frames = [{"image": f"images/f{i}.png", "height": SIZE, "width": SIZE, "K": cams.K[i].tolist(),
               "R": cams.R[i].tolist(), "t": cams.t[i].tolist(), **extra} for i in range(N)]
    (folder / "cams.json").write_text(json.dumps({"convention": "opencv", "frames": frames}))
    return folder / "cams.json"


def _levels(views):
    return [round(v * 255 / 10) - 1 for v in views.images[:, 0, 0, 0].tolist()]  # which frame's image each view holds


@pytest.fixture(params=["transforms", "transforms-no-suffix", "opencv"])
def camera_file(request, tmp_path):
    _write_images(tmp_path)
    if request.param == "opencv":
        return _opencv(tmp_path)
    return _transforms(tmp_path, "" if request.param == "transforms-no-suffix" else ".png")


def test_images_are_matched_to_frames_by_path_in_any_order(camera_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path / "images")  # image paths relative to the working folder, not the file's
    views = load_custom_views(["f4.png", "f1.png", "f2.png"], camera_file, options=RAW)
    assert views.frame_numbers == [4, 1, 2] and _levels(views) == [4, 1, 2]
    want = _cameras()[[4, 1, 2]]
    assert torch.allclose(views.cameras.R.double(), want.R, atol=1e-6)
    assert torch.allclose(views.cameras.t.double(), want.t, atol=1e-5)
    assert torch.allclose(views.cameras.K.double(), want.K, atol=1e-5)


def test_a_file_alone_means_every_frame_and_frames_pick_a_subset(camera_file):
    every = load_custom_views(None, camera_file, options=RAW)
    assert every.frame_numbers == list(range(N)) and _levels(every) == list(range(N))
    three = load_custom_views(None, camera_file, options=RAW, frames=[5, 0, 3])
    assert three.frame_numbers == [5, 0, 3] and _levels(three) == [5, 0, 3]
    assert torch.allclose(three.cameras.t.double(), _cameras()[[5, 0, 3]].t, atol=1e-5)


def test_an_image_copied_elsewhere_is_matched_by_its_file_name(camera_file, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "f3.png").write_bytes((tmp_path / "images" / "f3.png").read_bytes())
    assert match_images([str(tmp_path / "elsewhere" / "f3.png")], camera_file) == [3]


@pytest.mark.parametrize("case,message", [
    ("unknown", "matches no frame"),
    ("twice", "is given twice"),
    ("range", "frame 9 is not in"),
    ("both", "not both"),
])
def test_bad_selection_is_one_clear_line(camera_file, tmp_path, case, message):
    images = {"unknown": [str(tmp_path / "x.png")], "twice": [str(tmp_path / "images" / "f1.png")] * 2,
              "range": None, "both": [str(tmp_path / "images" / "f1.png")]}[case]
    frames = {"range": [1, 9], "both": [1]}.get(case)
    with pytest.raises(UserError, match=message) as err:
        load_custom_views(images, camera_file, options=RAW, frames=frames)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("top,message", [
    ({"camera_model": "OPENCV", "k1": -0.12, "k2": 0.0, "p1": 0.001, "p2": 0.0}, "lens distortion (k1=-0.12, p1=0.001)"),
    ({"camera_model": "OPENCV_FISHEYE", "k1": 0.0}, "camera_model OPENCV_FISHEYE"),
])
def test_distortion_is_refused(tmp_path, top, message):
    path = _transforms(tmp_path, ".png", **top)
    with pytest.raises(UserError, match="undistort the images first") as err:
        read_camera_file(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_zero_distortion_is_a_pinhole(tmp_path):
    path = _transforms(tmp_path, ".png", camera_model="OPENCV", k1=0.0, k2=0.0, p1=0.0, p2=0.0)
    assert len(read_camera_file(path).cameras) == N


def test_opencv_distortion_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"lens distortion \(distortion\[0\]=0.05\)"):
        read_camera_file(_opencv(tmp_path, distortion=[0.05, 0, 0, 0]))
    assert len(read_camera_file(_opencv(tmp_path, distortion=[0, 0, 0, 0, 0])).cameras) == N


def test_per_frame_distortion_of_an_unused_frame_still_names_the_frame(tmp_path):
    path = _transforms(tmp_path, ".png")
    data = json.loads(path.read_text())
    data["frames"][4]["k1"] = 0.3
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"frame 4 \(images/f4.png\) has lens distortion \(k1=0.3\)"):
        read_camera_file(path, [0, 1])

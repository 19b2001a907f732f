"""Camera files for custom input: OpenCV JSON and nerfstudio / instant-ngp ``transforms.json``.

OpenCV JSON (also what ``sparsefusion cameras`` writes)::

    {"convention": "opencv",
     "frames": [{"image": "a.png", "height": H, "width": W,
                 "K": [[fx,0,cx],[0,fy,cy],[0,0,1]], "R": [[...]], "t": [...]}, ...]}

``transforms.json`` holds OpenGL camera-to-world matrices (x right, y up, z backward) and
intrinsics ``fl_x, fl_y, cx, cy, w, h`` (top level or per frame) or ``camera_angle_x``.
Everything is validated: K invertible, R a rotation (det 1, orthonormal to 1e-4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .cameras import Cameras, is_rotation
from .errors import UserError
from .io import read_json

if TYPE_CHECKING:
    from .co3d import CO3DOptions, Views

_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))


@dataclass
class CameraFile:
    """Cameras of a camera file, one per listed image (all of one size)."""

    cameras: Cameras
    images: list[str]  # image paths as written in the file (relative to the file's folder)


def _matrix(value, shape: tuple[int, ...], what: str, path: Path) -> torch.Tensor:
    try:
        m = torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError):
        raise UserError(f"{path}: {what} is not a numeric array") from None
    if tuple(m.shape) != shape or not torch.isfinite(m).all():
        raise UserError(f"{path}: {what} must be a finite {'x'.join(map(str, shape))} array, got shape {tuple(m.shape)}")
    return m


def _validate(K: torch.Tensor, R: torch.Tensor, label: str, path: Path) -> None:
    if abs(torch.linalg.det(K).item()) < 1e-9 or K[2].tolist() != [0.0, 0.0, 1.0]:
        raise UserError(f"{path}: K of {label} is not an invertible pinhole matrix (last row must be 0 0 1)")
    if not is_rotation(R, 1e-4).item():
        det = torch.linalg.det(R).item()
        raise UserError(f"{path}: R of {label} is not a rotation (det {det:.4f}; R must be orthonormal with det 1)")


def read_camera_file(path: str | Path) -> CameraFile:
    """Read and validate an OpenCV camera JSON or a ``transforms.json``."""
    path = Path(path)
    data = read_json(path, "camera file")
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list) or not data["frames"]:
        raise UserError(f"{path}: expected an object with a non-empty 'frames' list")
    if "transform_matrix" in data["frames"][0]:
        return _read_transforms(path, data)
    Ks, Rs, ts, images, sizes = [], [], [], [], set()
    for i, fr in enumerate(data["frames"]):
        label = f"frame {i} ({fr.get('image', '?')})"
        for key in ("K", "R", "t", "height", "width"):
            if key not in fr:
                raise UserError(f"{path}: {label} has no {key!r}")
        K, R = _matrix(fr["K"], (3, 3), f"K of {label}", path), _matrix(fr["R"], (3, 3), f"R of {label}", path)
        _validate(K, R, label, path)
        Ks.append(K), Rs.append(R), ts.append(_matrix(fr["t"], (3,), f"t of {label}", path))
        images.append(str(fr.get("image", f"{i}")))
        sizes.add((int(fr["height"]), int(fr["width"])))
    if len(sizes) != 1:
        raise UserError(f"{path}: frames have different image sizes {sorted(sizes)}; resize them to one size")
    h, w = sizes.pop()
    return CameraFile(Cameras(torch.stack(Rs), torch.stack(ts), torch.stack(Ks), h, w), images)


def _intrinsics(src: dict, path: Path, label: str) -> tuple[torch.Tensor, int, int]:
    if "w" not in src or "h" not in src:
        raise UserError(f"{path}: {label} needs 'w' and 'h'")
    w, h = int(src["w"]), int(src["h"])
    if "fl_x" in src:
        fx = float(src["fl_x"])
        fy = float(src.get("fl_y", fx))
    elif "camera_angle_x" in src:
        fx = fy = 0.5 * w / math.tan(0.5 * float(src["camera_angle_x"]))
    else:
        raise UserError(f"{path}: {label} has neither fl_x nor camera_angle_x")
    cx, cy = float(src.get("cx", w / 2)), float(src.get("cy", h / 2))
    return torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=torch.float64), h, w


def _read_transforms(path: Path, data: dict) -> CameraFile:
    Ks, Rs, ts, images, sizes = [], [], [], [], set()
    for i, fr in enumerate(data["frames"]):
        label = f"frame {i} ({fr.get('file_path', '?')})"
        K, h, w = _intrinsics({**data, **fr}, path, label)
        c2w = _matrix(fr["transform_matrix"], (4, 4), f"transform_matrix of {label}", path)
        R_c2w = c2w[:3, :3] @ _GL_TO_CV
        _validate(K, R_c2w, label, path)
        R = R_c2w.T
        Rs.append(R), ts.append(-R @ c2w[:3, 3]), Ks.append(K)
        images.append(str(fr.get("file_path", f"{i}")))
        sizes.add((h, w))
    if len(sizes) != 1:
        raise UserError(f"{path}: frames have different image sizes {sorted(sizes)}")
    h, w = sizes.pop()
    return CameraFile(Cameras(torch.stack(Rs), torch.stack(ts), torch.stack(Ks), h, w), images)


def camera_file_frames(cameras: Cameras, images: list[str], extra: list[dict] | None = None) -> list[dict]:
    """OpenCV JSON frame records for cameras (one per image), optional extra keys per frame."""
    frames = []
    for i, image in enumerate(images):
        fr = {"image": image, "height": cameras.height, "width": cameras.width,
              "K": cameras.K[i].tolist(), "R": cameras.R[i].tolist(), "t": cameras.t[i].tolist()}
        frames.append({**fr, **(extra[i] if extra else {})})
    return frames


def _has_alpha(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as im:
        return im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)


def load_custom_views(images: list[str], cameras: str | Path, masks: list[str] | None = None,
                      options: "CO3DOptions | None" = None) -> "Views":
    """Posed views from image files and a camera file (one camera per image, in the given order).

    Masks come from ``masks`` files or from each image's alpha channel; with ``options.masked``
    or ``options.crop`` an image with neither is an error. Frames are cropped, resized and
    normalised exactly as dataset frames are.
    """
    from .co3d import CO3DOptions, Views, prepare_frame
    from .io import read_image
    from .normalize import normalize_cameras

    opt = options or CO3DOptions()
    cam_file = read_camera_file(cameras)
    if len(images) != len(cam_file.cameras):
        raise UserError(f"{len(images)} images but {len(cam_file.cameras)} cameras in {cameras}; give one camera per image")
    if masks and len(masks) != len(images):
        raise UserError(f"{len(masks)} masks for {len(images)} images; give one mask per image or none")
    outs = []
    for i, name in enumerate(images):
        path = Path(name)
        rgba = read_image(path, "RGBA")
        h, w = rgba.shape[:2]
        cam = cam_file.cameras[[i]]
        if (h, w) != (cam.height, cam.width):
            raise UserError(f"image {path} is {h}x{w} but its camera says {cam.height}x{cam.width}")
        if masks:
            mask = read_image(masks[i], "L")
            if mask.shape != (h, w):
                raise UserError(f"mask {masks[i]} is {mask.shape[0]}x{mask.shape[1]}, its image {h}x{w}")
        elif _has_alpha(path):
            mask = rgba[..., 3]
        elif opt.masked or opt.crop:
            raise UserError(f"image {path} has no alpha channel and no mask was given; "
                            "pass --masks or set masked=false data.crop=false")
        else:
            mask = np.ones((h, w), np.float32)
        img = torch.from_numpy(np.ascontiguousarray(rgba[..., :3])).permute(2, 0, 1)
        outs.append(prepare_frame(img, torch.from_numpy(np.ascontiguousarray(mask))[None].float(), cam.to(dtype=torch.float32), opt))
    imgs, ms, valids, cams = zip(*outs)
    cams = Cameras.cat(list(cams))
    transform = None
    if opt.normalize:
        cams, transform = normalize_cameras(cams)
    return Views(torch.stack(imgs), torch.stack(ms), torch.stack(valids), cams, list(range(len(images))),
                 [str(p) for p in images], "custom", transform)

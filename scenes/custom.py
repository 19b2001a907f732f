"""Camera files for custom input: OpenCV JSON and nerfstudio / instant-ngp ``transforms.json``.

OpenCV JSON (also what ``sparsefusion cameras`` writes)::

    {"convention": "opencv",
     "frames": [{"image": "a.png", "height": H, "width": W,
                 "K": [[fx,0,cx],[0,fy,cy],[0,0,1]], "R": [[...]], "t": [...]}, ...]}

``transforms.json`` holds OpenGL camera-to-world matrices (x right, y up, z backward) and
intrinsics ``fl_x, fl_y, cx, cy, w, h`` (top level or per frame) or ``camera_angle_x``.
Everything is validated: K invertible, R a rotation (det 1, orthonormal to 1e-4). Cameras are
pinhole: a non-zero distortion coefficient (``k1 k2 k3 k4 p1 p2`` in a transforms.json, a
``distortion`` list in OpenCV JSON) or a non-pinhole ``camera_model`` (fisheye, ...) is refused.

A file's frames are picked by image (each image matched to the frame whose ``file_path`` /
``image`` names it, in any order and any subset) or by index (``frames``); by default every
frame is used, its image read from the path the file gives (relative to the file's folder).
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
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")  # transforms.json (nerfstudio / COLMAP names)
PINHOLE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "OPENCV", "FULL_OPENCV", "SIMPLE_RADIAL", "RADIAL")  # pinhole at zero distortion
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")  # tried for a file_path without one


@dataclass
class CameraFile:
    """Cameras of the picked frames of a camera file (all of one size)."""

    cameras: Cameras
    images: list[str]  # image paths as written in the file (relative to the file's folder)
    indices: list[int]  # which frames of the file, in order


@dataclass
class _Frame:
    """One validated frame record of a camera file."""

    K: torch.Tensor  # (3, 3)
    R: torch.Tensor  # (3, 3) world -> camera, OpenCV
    t: torch.Tensor  # (3,)
    size: tuple[int, int]  # (height, width)
    image: str | None  # as the file names it, if it does


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


def _refuse_distortion(coefficients: dict[str, float], model: str | None, label: str, path: Path) -> None:
    """One line when a frame's lens is not a pinhole: non-zero coefficients or a non-pinhole camera model."""
    undistort = ("this reader takes pinhole cameras only: undistort the images first (e.g. COLMAP's "
                 "image_undistorter) and give their pinhole intrinsics")
    if model is not None and str(model).upper() not in PINHOLE_MODELS:
        raise UserError(f"{path}: {label} has camera_model {model}; {undistort}")
    bad = {k: v for k, v in coefficients.items() if v != 0}
    if bad:
        listed = ", ".join(f"{k}={v:g}" for k, v in bad.items())
        raise UserError(f"{path}: {label} has lens distortion ({listed}); {undistort}")


def _coefficients(src: dict, keys, what: str, path: Path) -> dict[str, float]:
    try:
        return {k: float(src[k]) for k in keys if k in src and src[k] is not None}
    except (TypeError, ValueError):
        raise UserError(f"{path}: {what} has a non-numeric distortion coefficient") from None


def _read_frames(path: Path) -> list[_Frame]:
    """Every frame of an OpenCV JSON or a ``transforms.json``, validated."""
    data = read_json(path, "camera file")
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list) or not data["frames"]:
        raise UserError(f"{path}: expected an object with a non-empty 'frames' list")
    if not all(isinstance(fr, dict) for fr in data["frames"]):
        raise UserError(f"{path}: every entry of 'frames' must be an object")
    if "transform_matrix" in data["frames"][0]:
        return [_transforms_frame(path, data, fr, i) for i, fr in enumerate(data["frames"])]
    return [_opencv_frame(path, fr, i) for i, fr in enumerate(data["frames"])]


def _opencv_frame(path: Path, fr: dict, i: int) -> _Frame:
    label = f"frame {i} ({fr.get('image', '?')})"
    for key in ("K", "R", "t", "height", "width"):
        if key not in fr:
            raise UserError(f"{path}: {label} has no {key!r}")
    K, R = _matrix(fr["K"], (3, 3), f"K of {label}", path), _matrix(fr["R"], (3, 3), f"R of {label}", path)
    _validate(K, R, label, path)
    dist = fr.get("distortion") or []
    if not isinstance(dist, list):
        raise UserError(f"{path}: distortion of {label} must be a list (OpenCV order k1 k2 p1 p2 [k3 ...])")
    named = {f"distortion[{k}]": v for k, v in enumerate(dist)}
    _refuse_distortion(_coefficients(named, list(named), label, path), None, label, path)
    image = fr.get("image")
    return _Frame(K, R, _matrix(fr["t"], (3,), f"t of {label}", path), (int(fr["height"]), int(fr["width"])),
                  None if image is None else str(image))


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


def _transforms_frame(path: Path, data: dict, fr: dict, i: int) -> _Frame:
    label = f"frame {i} ({fr.get('file_path', '?')})"
    src = {**data, **fr}  # per-frame intrinsics and distortion override the top level
    if "transform_matrix" not in fr:
        raise UserError(f"{path}: {label} has no 'transform_matrix'")
    _refuse_distortion(_coefficients(src, DISTORTION_KEYS, label, path), src.get("camera_model"), label, path)
    K, h, w = _intrinsics(src, path, label)
    c2w = _matrix(fr["transform_matrix"], (4, 4), f"transform_matrix of {label}", path)
    R_c2w = c2w[:3, :3] @ _GL_TO_CV
    _validate(K, R_c2w, label, path)
    R = R_c2w.T
    image = fr.get("file_path")
    return _Frame(K, R, -R @ c2w[:3, 3], (h, w), None if image is None else str(image))


def _pick(frames: list[_Frame], indices: list[int] | None, path: Path) -> list[int]:
    """Frame indices to use: ``indices`` checked against the file (default: every frame)."""
    if indices is None:
        return list(range(len(frames)))
    if not indices:
        raise UserError("frames=[] picks no frame; give frame indices such as --frames 3,17,42")
    bad = [i for i in indices if not 0 <= i < len(frames)]
    if bad:
        raise UserError(f"frame {bad[0]} is not in {path} (it has frames 0-{len(frames) - 1})")
    if len(set(indices)) != len(indices):
        raise UserError(f"frames {indices} names a frame twice")
    return list(indices)


def _camera_file(frames: list[_Frame], indices: list[int], path: Path) -> CameraFile:
    sizes = sorted({frames[i].size for i in indices})
    if len(sizes) != 1:
        raise UserError(f"{path}: the frames used have different image sizes {sizes}; resize them to one size")
    (h, w), picked = sizes[0], [frames[i] for i in indices]
    cams = Cameras(torch.stack([f.R for f in picked]), torch.stack([f.t for f in picked]),
                   torch.stack([f.K for f in picked]), h, w)
    return CameraFile(cams, [f.image if f.image is not None else str(i) for f, i in zip(picked, indices)], indices)


def read_camera_file(path: str | Path, frames: list[int] | None = None) -> CameraFile:
    """Read and validate an OpenCV camera JSON or a ``transforms.json``; ``frames`` picks frames by index."""
    path = Path(path)
    records = _read_frames(path)
    return _camera_file(records, _pick(records, frames, path), path)


def match_images(images: list[str], path: str | Path) -> list[int]:
    """The frame of camera file ``path`` each image is, by the path the frame names (any subset, any order).

    A frame's path is relative to the file's folder and may lack the suffix (instant-ngp); an
    image is matched by its full path, else by its file name when exactly one frame has it.
    A file whose frames name no images is matched by order (one frame per image).
    """
    path = Path(path)
    records = _read_frames(path)
    named = [(i, f.image) for i, f in enumerate(records) if f.image is not None]
    if not named:
        if len(images) != len(records):
            raise UserError(f"{len(images)} images but {len(records)} cameras in {path}, whose frames name no "
                            "image files; give one camera per image, in order")
        return list(range(len(images)))
    full = [(i, (path.parent / name).resolve()) for i, name in named]
    out = []
    for image in images:
        q = Path(image).resolve()
        hits = [i for i, p in full if q == p or q.with_suffix("") == p]
        if not hits:
            hits = [i for i, p in full if q.name == p.name or q.stem == p.name]
        if len(hits) != 1:
            what = "several frames" if hits else "no frame"
            raise UserError(f"image {image} matches {what} of {path} (by file_path / image: e.g. "
                            f"{named[0][1]!r}); name the images as the file does, or pick frames with --frames")
        if hits[0] in out:
            raise UserError(f"image {image} is given twice (frame {hits[0]} of {path})")
        out.append(hits[0])
    return out


def frame_image_paths(cam_file: CameraFile, path: str | Path) -> list[Path]:
    """Where the picked frames' images are: each frame's path relative to the file's folder (suffix found if absent)."""
    folder, out = Path(path).parent, []
    for name in cam_file.images:
        p = folder / name
        if not p.is_file() and not p.suffix:
            p = next((p.with_suffix(s) for s in IMAGE_SUFFIXES if p.with_suffix(s).is_file()), p)
        if not p.is_file():
            raise UserError(f"image {p} of {path} not found (frame paths are relative to the camera file's folder)")
        out.append(p)
    return out


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


def load_custom_views(images: list[str] | None, cameras: str | Path, masks: list[str] | None = None,
                      options: "CO3DOptions | None" = None, frames: list[int] | None = None) -> "Views":
    """Posed views from a camera file: the frames ``images`` are (matched by file path), or ``frames`` by index, or all.

    Without ``images`` each frame's image is read from the path the file gives. Masks come
    from ``masks`` files (one per view, in order) or from each image's alpha channel; with
    ``options.masked`` or ``options.crop`` an image with neither is an error. Frames are
    cropped, resized and normalised exactly as dataset frames are.
    """
    from .co3d import CO3DOptions, Views, prepare_frame
    from .io import read_image
    from .normalize import normalize_cameras

    opt = options or CO3DOptions()
    if images and frames is not None:
        raise UserError("give images (matched to the camera file's frames by file path) or frames (indices), not both")
    if images:
        cam_file = read_camera_file(cameras, match_images(images, cameras))
        paths = [Path(p) for p in images]
    else:
        cam_file = read_camera_file(cameras, frames)
        paths = frame_image_paths(cam_file, cameras)
    if masks and len(masks) != len(paths):
        raise UserError(f"{len(masks)} masks for {len(paths)} images; give one mask per image or none")
    outs = []
    for i, path in enumerate(paths):
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
    return Views(torch.stack(imgs), torch.stack(ms), torch.stack(valids), cams, list(cam_file.indices),
                 [str(p) for p in paths], "custom", transform)

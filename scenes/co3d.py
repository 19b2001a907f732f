"""Reader for datasets in the CO3D v2 layout (real CO3D and the synthetic pybullet-objects set).

``ROOT/<category>/{frame_annotations.jgz, sequence_annotations.jgz, set_lists/...}``; image
and mask paths come from the annotations, relative to ROOT, and are refused if they leave it.
Cameras are returned in the OpenCV convention of :mod:`scenes.cameras`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as Fnn

from .cameras import Cameras, is_rotation
from .errors import UnreadableImage, UserError
from .io import read_image, read_json
from .normalize import Similarity, normalization_for
from .p3d_cameras import cameras_from_pytorch3d

MASK_THRESHOLD = 0.4
CROP_CONTEXT = 0.3


@dataclass
class CO3DOptions:
    """How frames are turned into model inputs."""

    crop: bool = True
    """Crop to the mask's bounding box (threshold 0.4) grown by 30% context, clamped to the image."""
    image_size: int | None = 256
    """Square output side: aspect-preserving resize pasted top-left; None keeps the native size."""
    normalize: bool = True
    """Normalise each sequence: axes' nearest point at the origin, mean camera distance 3."""
    masked: bool = True
    """Multiply images by their foreground mask (black background)."""
    soft_masks: bool = False
    """Mask at the native size, then resize image and mask alike (antialiased bilinear): an edge pixel keeps its
    partial coverage, as a renderer with a black background draws it. False is implicitron's order
    (bilinear image, nearest mask, multiply after resizing), which leaves the background's colour in
    edge pixels: the benchmark convention."""

    def __post_init__(self):
        size = self.image_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise UserError(f"image size must be a positive number of pixels (or null for the native size), got {size!r}")


@dataclass
class Views:
    """Posed, masked images of one sequence. Images in [0, 1]."""

    images: torch.Tensor  # (N, 3, H, W)
    masks: torch.Tensor  # (N, 1, H, W) foreground probability
    valid: torch.Tensor  # (N, 1, H, W) 1 where the image has pixels (not padding)
    cameras: Cameras
    frame_numbers: list[int]
    image_paths: list[str]
    sequence: str = ""
    transform: Similarity | None = None  # world -> normalised frame, when normalised

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device) -> "Views":
        """The same views with images, masks, valid regions and cameras on ``device``."""
        return Views(self.images.to(device), self.masks.to(device), self.valid.to(device), self.cameras.to(device),
                     self.frame_numbers, self.image_paths, self.sequence, self.transform)

    def select(self, index: list[int] | torch.Tensor) -> "Views":
        """A subset of the views, in the given order."""
        index = [int(i) for i in index]
        return Views(
            self.images[index], self.masks[index], self.valid[index], self.cameras[index],
            [self.frame_numbers[i] for i in index], [self.image_paths[i] for i in index],
            self.sequence, self.transform,
        )


@dataclass
class Sequence:
    """Annotation records of one sequence, ordered by frame number."""

    name: str
    frames: list[dict]
    all_frames: list[dict] = field(default_factory=list)  # every annotated frame (normalisation)


def mask_bbox(mask: np.ndarray, threshold: float = MASK_THRESHOLD) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, w, h) of mask > threshold; the threshold drops by 0.05 until > 1 px."""
    thr = threshold
    while thr > 0 and (mask > thr).sum() <= 1:
        thr -= 0.05
    fg = mask > max(thr, 0.0)
    if fg.sum() <= 1:
        return 0, 0, mask.shape[1], mask.shape[0]
    ys, xs = np.nonzero(fg.any(axis=1))[0], np.nonzero(fg.any(axis=0))[0]
    return int(xs[0]), int(ys[0]), int(xs[-1] + 1 - xs[0]), int(ys[-1] + 1 - ys[0])


def crop_box(bbox: tuple[int, int, int, int], height: int, width: int,
             context: float = CROP_CONTEXT) -> tuple[int, int, int, int]:
    """Grow a box by ``context`` (half on each side), clamp to the image, round: (x0, y0, x1, y1)."""
    x, y, w, h = (float(v) for v in bbox)
    x, y = x - w * context / 2, y - h * context / 2
    w, h = max(w * (1 + context), 2.0), max(h * (1 + context), 2.0)
    x0, x1 = min(max(x, 0.0), width), min(max(x + w, 0.0), width)
    y0, y1 = min(max(y, 0.0), height), min(max(y + h, 0.0), height)
    return round(x0), round(y0), round(x1), round(y1)


def _resize(t: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize a (C, H, W) tensor."""
    if mode == "nearest":
        return Fnn.interpolate(t[None], size=size, mode="nearest")[0]
    return Fnn.interpolate(t[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


class CO3DDataset:
    """One category of a CO3D-v2-layout dataset root."""

    def __init__(self, root: str | Path, category: str):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise UserError(f"dataset root does not exist: {self.root} (pass --data with the folder holding <category>/)")
        self.root = self.root.resolve()
        self.category = category
        cat_dir = self.root / category
        if not cat_dir.is_dir():
            found = sorted(p.name for p in self.root.iterdir() if (p / "frame_annotations.jgz").exists())
            raise UserError(f"category {category!r} not found under {self.root} (categories there: {', '.join(found) or 'none'})")
        ann_path = cat_dir / "frame_annotations.jgz"
        if not ann_path.is_file():
            raise UserError(f"category {category!r} has no annotation file: {ann_path} is missing")
        frames = read_json(ann_path, "frame annotations")
        self._by_seq: dict[str, list[dict]] = {}
        for fr in frames:
            self._by_seq.setdefault(fr["sequence_name"], []).append(fr)
        for seq in self._by_seq.values():
            seq.sort(key=lambda f: f["frame_number"])

    def frames_by_sequence(self) -> dict[str, list[dict]]:
        """Every annotated frame, grouped by sequence and ordered by frame number."""
        return dict(self._by_seq)

    # ------------------------------------------------------------------ set lists
    def subsets(self) -> list[str]:
        """Subset names available under ``set_lists/``."""
        d = self.root / self.category / "set_lists"
        return sorted(p.stem[len("set_lists_"):] for p in d.glob("set_lists_*.json"))

    def sequences(self, subset: str, split: str, min_frames: int = 0,
                  check_files: bool = True) -> list[Sequence]:
        """Sequences of a set list's part, in order of first appearance, frames by frame number.

        Sequences with fewer than ``min_frames`` frames are dropped; with ``check_files``, so are
        sequences whose images are absent (a partial download), with one warning and a count.
        """
        path = self.root / self.category / "set_lists" / f"set_lists_{subset}.json"
        if not path.is_file():
            raise UserError(f"set list not found: {path} (subsets here: {', '.join(self.subsets()) or 'none'})")
        lists = read_json(path, "set list")
        if split not in lists:
            raise UserError(f"set list {path.name} has no split {split!r} (it has {', '.join(lists)})")
        wanted: dict[str, set[int]] = {}
        for entry in lists[split]:
            wanted.setdefault(entry[0], set()).add(int(entry[1]))
        out, missing = [], 0
        for name, numbers in wanted.items():
            all_frames = self._by_seq.get(name, [])
            frames = [f for f in all_frames if f["frame_number"] in numbers]
            if len(frames) < max(min_frames, 1):
                continue
            if check_files and not all(self.resolve(f["image"]["path"]).is_file() for f in frames):
                missing += 1
                continue
            out.append(Sequence(name, frames, all_frames))
        if missing:
            warnings.warn(f"{missing} sequence(s) of {self.category}/{subset}/{split} have missing image files (partial download?) and were skipped", stacklevel=2)
        return out

    # ------------------------------------------------------------------ frames
    def resolve(self, rel: str) -> Path:
        """Absolute path of an annotation path; refuses paths that leave the dataset root."""
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root):
            raise UserError(f"annotation path leaves the dataset root: {rel!r} (root {self.root})")
        return path

    def raw_cameras(self, frames: list[dict], dtype=torch.float64) -> list[Cameras]:
        """The files' cameras, one per frame, in OpenCV form at each frame's native size."""
        cams = []
        for fr in frames:
            vp = fr.get("viewpoint")
            if vp is None:
                raise UserError(f"frame {fr['sequence_name']}/{fr['frame_number']} has no viewpoint")
            h, w = fr["image"]["size"]
            R = torch.tensor(vp["R"], dtype=torch.float64)
            if R.shape != (3, 3) or not torch.isfinite(R).all() or not is_rotation(R, 1e-4).item():
                det = torch.linalg.det(R).item() if R.shape == (3, 3) else float("nan")
                raise UserError(f"sequence {fr['sequence_name']}, frame {fr['frame_number']}: viewpoint R is not a "
                                f"rotation (det {det:.4f}; R must be a 3x3 orthonormal matrix with det 1)")
            cams.append(cameras_from_pytorch3d(
                torch.tensor([vp["R"]], dtype=dtype), torch.tensor([vp["T"]], dtype=dtype),
                torch.tensor([vp["focal_length"]], dtype=dtype),
                torch.tensor([vp["principal_point"]], dtype=dtype),
                h, w, vp.get("intrinsics_format", "ndc_norm_image_bounds"),
            ))
        return cams

    def load(self, seq: Sequence, options: CO3DOptions, frame_index: list[int] | None = None,
             dtype=torch.float32, skip_unreadable: bool = False) -> Views:
        """Load frames of a sequence (all, or those at ``frame_index``) as :class:`Views`.

        With ``skip_unreadable``, frames whose image or mask is missing or cannot be decoded are
        left out (compare ``frame_numbers`` to see which); if none is left, the error is raised.
        """
        frames = seq.frames if frame_index is None else [seq.frames[i] for i in frame_index]
        transform = None
        if options.normalize:
            all_cams = Cameras.cat(_same_size(self.raw_cameras(seq.all_frames or seq.frames)))
            transform = normalization_for(all_cams)
        images, masks, valids, cams, kept, error = [], [], [], [], [], None
        for fr, cam in zip(frames, self.raw_cameras(frames)):
            try:
                img, mask, valid, cam = self._load_frame(fr, cam, options)
            except UnreadableImage as err:
                if not skip_unreadable:
                    raise
                error = err
                continue
            if transform is not None:
                cam = transform.apply_cameras(cam)
            images.append(img), masks.append(mask), valids.append(valid), cams.append(cam)
            kept.append(fr)
        if error is not None and not kept:
            raise error
        frames = kept
        if len({(c.height, c.width) for c in cams}) != 1:
            raise UserError(f"frames of {seq.name} have different sizes; set image_size to load them together")
        return Views(
            torch.stack(images), torch.stack(masks), torch.stack(valids),
            Cameras.cat(cams).to(dtype=dtype), [f["frame_number"] for f in frames],
            [f["image"]["path"] for f in frames], seq.name, transform,
        )

    def _load_frame(self, fr: dict, cam: Cameras, opt: CO3DOptions):
        """Image (3,H,W), mask (1,H,W), valid region (1,H,W) and camera of one frame."""
        img = torch.from_numpy(read_image(self.resolve(fr["image"]["path"]), "RGB")).permute(2, 0, 1)
        h, w = img.shape[1:]
        if (h, w) != (cam.height, cam.width):
            raise UserError(f"image {fr['image']['path']} is {h}x{w} but its annotation says {cam.height}x{cam.width}")
        if fr.get("mask") and fr["mask"].get("path"):
            mask = torch.from_numpy(read_image(self.resolve(fr["mask"]["path"]), "L"))[None]
        else:
            if opt.masked or opt.crop:
                raise UserError(f"frame {fr['image']['path']} has no mask but masked/crop need one")
            mask = torch.ones(1, h, w)
        return prepare_frame(img, mask, cam, opt)


def prepare_frame(img: torch.Tensor, mask: torch.Tensor, cam: Cameras, opt: CO3DOptions):
    """Crop, resize and mask one frame: image (3,H,W), mask (1,H,W) -> image, mask, valid region, camera."""
    h, w = img.shape[1:]
    soft = opt.soft_masks and opt.masked
    if soft:
        img = img * mask  # premultiplied before any resampling
    if opt.crop:
        x0, y0, x1, y1 = crop_box(mask_bbox(mask[0].numpy()), h, w)
        img, mask = img[:, y0:y1, x0:x1], mask[:, y0:y1, x0:x1]
        cam = cam.crop(x0, y0, x1 - x0, y1 - y0)
    valid = torch.ones_like(mask)
    if opt.image_size is not None:
        size = opt.image_size
        s = cam.resize_scale(size, size)
        nh, nw = (max(1, math.floor(d * s + 1e-6)) for d in (cam.height, cam.width))
        canvas = torch.zeros(5, size, size)
        canvas[:3, :nh, :nw] = _resize(img, (nh, nw), "bilinear").clamp(0, 1)
        canvas[3:4, :nh, :nw] = _resize(mask, (nh, nw), "bilinear" if soft else "nearest").clamp(0, 1)
        canvas[4, :nh, :nw] = 1.0
        img, mask, valid = canvas[:3], canvas[3:4], canvas[4:5]
        cam = cam.resize(size, size)
    if opt.masked and not soft:
        img = img * mask
    return img, mask, valid, cam


def _same_size(cams: list[Cameras]) -> list[Cameras]:
    """Cameras of possibly different image sizes, made concatenable (geometry only matters)."""
    h, w = cams[0].height, cams[0].width
    return [Cameras(c.R, c.t, c.K, h, w) for c in cams]

"""Writing datasets in the CO3D v2 layout (annotations, set lists), so one reader serves all data.

Used by the synthetic generator and by tests that round-trip known cameras through the files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .cameras import Cameras
from .io import read_json, write_json
from .p3d_cameras import cameras_to_pytorch3d


@dataclass
class FrameRecord:
    """One frame of a sequence, with paths relative to the dataset root."""

    frame_number: int
    image_path: str
    mask_path: str | None
    mask_mass: float | None = None
    timestamp: float = 0.0


@dataclass
class SequenceRecord:
    """One sequence: its frames and their cameras (OpenCV, one per frame, at the image size)."""

    name: str
    frames: list[FrameRecord]
    cameras: Cameras
    frame_type: str = "train_known"
    extra: dict = field(default_factory=dict)


def frame_annotations(
    seq: SequenceRecord, intrinsics_format: str = "ndc_isotropic"
) -> list[dict]:
    """CO3D ``FrameAnnotation`` dicts for a sequence (PyTorch3D R, T and NDC intrinsics)."""
    R, T, f, p = cameras_to_pytorch3d(seq.cameras, intrinsics_format)
    out = []
    for i, fr in enumerate(seq.frames):
        ann = {
            "sequence_name": seq.name,
            "frame_number": fr.frame_number,
            "frame_timestamp": fr.timestamp,
            "image": {"path": fr.image_path, "size": [seq.cameras.height, seq.cameras.width]},
            "depth": None,
            "mask": None if fr.mask_path is None else {"path": fr.mask_path, "mass": fr.mask_mass},
            "viewpoint": {
                "R": R[i].tolist(),
                "T": T[i].tolist(),
                "focal_length": f[i].tolist(),
                "principal_point": p[i].tolist(),
                "intrinsics_format": intrinsics_format,
            },
            "meta": {"frame_type": seq.frame_type},
        }
        out.append(ann)
    return out


def write_category(
    root: str | Path,
    category: str,
    sequences: Iterable[SequenceRecord],
    set_lists: dict[str, dict[str, list[str]]],
    intrinsics_format: str = "ndc_isotropic",
) -> None:
    """Write ``frame_annotations.jgz``, ``sequence_annotations.jgz`` and set lists of a category.

    ``set_lists`` maps a subset name (e.g. ``fewview_train``) to ``{"train"|"val"|"test":
    [sequence names]}``; every frame of a listed sequence goes into that part. The root's
    ``category_to_subset_name_list.json`` is updated to include this category's subsets.
    """
    root = Path(root)
    sequences = list(sequences)
    frames: list[dict] = []
    by_name: dict[str, list[dict]] = {}
    for seq in sequences:
        anns = frame_annotations(seq, intrinsics_format)
        frames.extend(anns)
        by_name[seq.name] = anns
    cat_dir = root / category
    write_json(cat_dir / "frame_annotations.jgz", frames, gz=True)
    write_json(
        cat_dir / "sequence_annotations.jgz",
        [{"sequence_name": s.name, "category": category, **s.extra} for s in sequences],
        gz=True,
    )
    for subset, parts in set_lists.items():
        lists = {
            part: [
                [name, a["frame_number"], a["image"]["path"]]
                for name in names
                for a in by_name[name]
            ]
            for part, names in parts.items()
        }
        write_json(cat_dir / "set_lists" / f"set_lists_{subset}.json", lists)
    index_path = root / "category_to_subset_name_list.json"
    index = read_json(index_path) if index_path.is_file() else {}
    index[category] = sorted(set(index.get(category, [])) | set(set_lists))
    write_json(index_path, index)

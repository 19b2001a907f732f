"""Which scenes and views a command reads, and how their images are prepared (shared by every command)."""

from __future__ import annotations

from dataclasses import dataclass

from scenes.co3d import CO3DDataset, CO3DOptions
from scenes.errors import UserError
from scenes.splits import eval_scenes, eval_sequences


@dataclass
class DataConfig:
    """Which scenes, which views, and how images are prepared (shared by every command)."""

    root: str = "data/pybullet-objects"
    """Dataset root in the CO3D v2 layout (CO3D itself or `sparsefusion make-dataset` output)."""
    category: str = "random_objects"
    """Category folder under the root."""
    subset: str = "fewview_dev"
    """Set list name: set_lists/set_lists_<subset>.json."""
    split: str = "test"
    """Part of the set list: train, val or test."""
    views: int = 2
    """Input views per scene; the other evaluation frames are targets."""
    image_size: int | None = 64
    """Square image side after crop and resize; null keeps the native size."""
    max_scenes: int | None = None
    """Evaluate only the first N scenes (null: all)."""
    eval_frames: int = 32
    """Frames spaced evenly over each sequence that form the scene (SparseFusion: 32)."""
    crop: bool = True
    """Crop each frame around its mask (threshold 0.4, 30% context), as implicitron."""
    normalize: bool = True
    """Normalise each scene (axes' nearest point at the origin, mean camera distance 3)."""
    masked: bool = True
    """Foreground-mask the images on black."""
    soft_masks: bool = False
    """Mask before resizing and keep edge pixels' partial coverage (see CO3DOptions.soft_masks); false is
    the benchmark's (implicitron's) order, whose edge pixels keep some background colour."""

    def __post_init__(self):
        if self.image_size is not None and self.image_size < 1:
            raise UserError(f"data.image_size must be a positive number of pixels (or null), got {self.image_size}")

    def options(self) -> CO3DOptions:
        """Reader options of this config."""
        return CO3DOptions(self.crop, self.image_size, self.normalize, self.masked, self.soft_masks)


def scenes_of(d: DataConfig):
    """The evaluation scenes a data config selects, loaded one by one."""
    ds = CO3DDataset(d.root, d.category)
    return eval_scenes(ds, eval_sequences(ds, d.subset, d.split, d.max_scenes), d.views, d.options(), d.eval_frames)

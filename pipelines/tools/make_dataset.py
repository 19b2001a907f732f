"""``sparsefusion make-dataset``: render pybullet-objects in the CO3D v2 layout."""

from __future__ import annotations

from dataclasses import dataclass

from scenes.synthetic import generate, parse_objects


@dataclass
class MakeDatasetConfig:
    """Configuration of ``sparsefusion make-dataset``."""

    root: str = "data/pybullet-objects"
    """Dataset root to write (category random_objects inside)."""
    objects: str = "0-899"
    """Object ids to render: train 0-799, val 800-899; 900-999 are reserved for held-out evaluation."""
    views: int = 32
    """Views per object."""
    image_size: int = 256
    """Render size (square)."""
    seed: int = 0
    """Seed of colours and camera paths."""
    workers: int | None = None
    """Parallel render processes (default: all cores)."""
    include_reserved: bool = False
    """Allow rendering the reserved held-out objects 900-999 (never for training or tuning)."""


def run(cfg: MakeDatasetConfig) -> dict:
    """Render the requested objects; prints where the dataset is and how long it took."""
    summary = generate(
        cfg.root, parse_objects(cfg.objects), views=cfg.views, image_size=cfg.image_size,
        seed=cfg.seed, workers=cfg.workers, include_reserved=cfg.include_reserved,
    )
    print(f"{cfg.root}: rendered {summary['rendered']} objects x {cfg.views} views, "
          f"{summary['skipped']} already there, {len(summary['excluded'])} excluded (empty mesh), "
          f"{summary['seconds']:.1f} s")
    return summary

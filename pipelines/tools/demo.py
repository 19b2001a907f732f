"""``make demo``: generate the few validation objects it needs, compare every method on them.

Runs on a fresh machine after ``make install`` with no downloads: renders the objects with
pybullet, runs ``compare`` with the shipped demo models (2 input views), prints the table, the
time each step took and where the report is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pipelines.common.data_config import DataConfig
from pipelines.common.runtime import output_dir
from pipelines.harness.compare import CompareConfig, compare
from pipelines.tools.make_dataset import MakeDatasetConfig
from pipelines.tools.make_dataset import run as make_dataset
from scenes.synthetic import parse_objects

DEMO_METHODS = ["nearest-view", "eft", "vldm", "pixelnerf", "dfm", "sparsefusion-fast"]


@dataclass
class DemoConfig:
    """Configuration of ``sparsefusion demo``."""

    root: str = "data/pybullet-objects"
    """Dataset root; the demo renders only the validation objects it uses."""
    objects: str = "800-801"
    """Validation objects rendered and compared (never 900-999)."""
    methods: list[str] = field(default_factory=lambda: list(DEMO_METHODS))
    """Methods compared (a learned method whose shipped model is missing is skipped, with the reason)."""
    views: int = 2
    """Input views per object."""
    image_size: int = 64
    """Image side of the evaluation."""
    eval_frames: int = 16
    """Frames per object forming its scene: 2 inputs, the rest targets (the evaluation protocol
    uses 32; 16 keeps the demo within 10 minutes on 2 CPU cores)."""
    turntable_frames: int = 24
    """Frames of the 3D methods' turntables (first object)."""
    out: str | None = None
    """Report folder (default outputs/demo/default)."""


def run(cfg: DemoConfig) -> dict:
    """Data, then ``compare`` on it; prints the table and each step's time."""
    out = output_dir("demo", cfg.out, "default")
    total = time.perf_counter()
    start = time.perf_counter()
    make_dataset(MakeDatasetConfig(root=cfg.root, objects=cfg.objects))
    times = {"make-dataset": time.perf_counter() - start}
    n = len(parse_objects(cfg.objects))
    data = DataConfig(root=cfg.root, views=cfg.views, image_size=cfg.image_size, max_scenes=n,
                      eval_frames=cfg.eval_frames)
    start = time.perf_counter()
    report = compare(CompareConfig(methods=cfg.methods, data=data, out=str(out), grid_scenes=n,
                                   turntable_frames=cfg.turntable_frames))
    compared = time.perf_counter() - start
    for method, r in report["methods"].items():
        times[f"compare: {method}"] = r["wall_seconds"]
    times["compare: grid, report"] = compared - sum(r["wall_seconds"] for r in report["methods"].values())
    times["total"] = time.perf_counter() - total
    for step, sec in times.items():
        print(f"{step:>32s}: {sec:6.1f} s")
    print(f"report in {out / 'compare.md'}")
    return report

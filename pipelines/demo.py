"""``make demo``: generate the few validation objects it needs, evaluate on them, print the report.

Runs on a fresh machine after ``make install`` with no downloads; prints each step's time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from scenes.errors import CheckpointMissing
from scenes.synthetic import parse_objects

from .evaluate import DataConfig, EvaluateConfig, evaluate, markdown_table
from .make_dataset import MakeDatasetConfig
from .make_dataset import run as make_dataset
from .runtime import output_dir


@dataclass
class DemoConfig:
    """Configuration of ``sparsefusion demo``."""

    root: str = "data/pybullet-objects"
    """Dataset root; the demo renders only the validation objects it uses."""
    objects: str = "800-804"
    """Validation objects rendered and evaluated (never 900-999)."""
    methods: list[str] = field(default_factory=lambda: ["nearest-view", "eft", "vldm"])
    """Methods compared (a learned method whose shipped model is missing is skipped, with the reason)."""
    views: int = 2
    """Input views per object."""
    image_size: int = 64
    """Image side of the evaluation."""
    out: str | None = None
    """Report folder (default outputs/demo/default)."""


def run(cfg: DemoConfig) -> None:
    """Data, evaluation of each method, one Markdown report."""
    out = output_dir("demo", cfg.out, "default")
    times, summaries = {}, []
    start = time.perf_counter()
    make_dataset(MakeDatasetConfig(root=cfg.root, objects=cfg.objects))
    times["make-dataset"] = time.perf_counter() - start
    n = len(parse_objects(cfg.objects))
    for method in cfg.methods:
        start = time.perf_counter()
        data = DataConfig(root=cfg.root, views=cfg.views, image_size=cfg.image_size, max_scenes=n)
        try:
            summaries.append(evaluate(EvaluateConfig(method=method, data=data, out=str(out / method))))
        except CheckpointMissing as err:
            print(f"skipping {method}: {err}")
            continue
        times[f"evaluate {method}"] = time.perf_counter() - start
    report = markdown_table(summaries)
    (out / "report.md").write_text(f"# Demo: {n} validation objects, {cfg.views} input views, {cfg.image_size}²\n\n{report}")
    print(report)
    for step, sec in times.items():
        print(f"{step:>28s}: {sec:6.1f} s")
    print(f"{'total':>28s}: {sum(times.values()):6.1f} s\nreport in {out / 'report.md'}")

"""``sparsefusion compare``: several methods on the same scenes, inputs and targets, one report.

Each method runs through ``evaluate`` into ``<out>/<category>/<method>/`` (so finished scenes
resume and torchrun shares the scenes between processes). The main process then writes
``compare.md`` (mean and per-category table), ``compare.json``, ``grid.png`` (inputs, ground
truth and every method at one target per scene) and, for the 3D methods, turntable GIFs of
the first scenes under ``<out>/<category>/<method>/turntables/``. A method whose model is
missing is skipped with the reason.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pipelines.common.data_config import DataConfig, scenes_of
from pipelines.common.metrics import Unavailable, summarize, to_jsonable
from pipelines.common.processes import processes
from pipelines.common.runtime import machine_info, output_dir
from pipelines.harness.evaluate import EvaluateConfig, evaluate, markdown_table, read_predictions, scalar_metrics
from pipelines.harness.grid import image_grid, with_column_labels
from pipelines.harness.methods import Method, SceneMethod, available_methods
from scenes.errors import CheckpointMissing, UserError
from scenes.io import write_image, write_json
from scenes.normalize import circle_path
from scenes.splits import EvalScene

ALL_METHODS = ["nearest-view", "eft", "vldm", "pixelnerf", "dfm", "sparsefusion", "sparsefusion-fast"]
MODEL_OF = {"eft": "vldm", "vldm": "vldm", "vldm-paper": "vldm", "sparsefusion": "vldm",
            "sparsefusion-fast": "vldm", "sparsefusion-sds": "vldm", "sparsefusion-paper": "vldm",
            "pixelnerf": "pixelnerf", "dfm": "dfm"}  # method -> model folder key


@dataclass
class ModelsConfig:
    """Model folders of the learned methods (null: the shipped demo model)."""

    vldm: str | None = None
    """VLDM folder for eft, vldm and the sparsefusion methods."""
    pixelnerf: str | None = None
    """pixelNeRF folder."""
    dfm: str | None = None
    """DFM folder."""


@dataclass
class CompareConfig:
    """Configuration of ``sparsefusion compare``."""

    methods: list[str] = field(default_factory=lambda: list(ALL_METHODS))
    """Methods to compare, in table order (any subset of `sparsefusion evaluate --list-methods`)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Scenes and views (data.category is used when categories is null)."""
    categories: list[str] | None = None
    """Categories to compare on (null: data.category); the table gives the mean and each category."""
    models: ModelsConfig = field(default_factory=ModelsConfig)
    """Model folders."""
    out: str | None = None
    """Output folder (default outputs/compare/<category>-<views>v)."""
    device: str = "auto"
    """cpu, cuda or auto (under torchrun, auto gives each process its own GPU)."""
    seed: int = 0
    """Seed of the stochastic methods (per scene: seed + scene index)."""
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Options per method, e.g. options.vldm.steps=50 (as `evaluate options.*`)."""
    lpips_net: str = "vgg"
    """LPIPS backbone: vgg or alex."""
    fid: bool = True
    """FID/KID per category when the Inception weights are present."""
    resume: bool = True
    """Keep finished scenes found in the output folder."""
    grid_scenes: int = 4
    """Rows of grid.png (the first scenes of the first category), at each scene's least-seen target."""
    turntable_scenes: int = 1
    """Turntable GIFs of the 3D methods for this many first scenes per category (0: none)."""
    turntable_frames: int = 24
    """Frames per turntable (a circle through the input cameras)."""
    fps: int = 12
    """Turntable frame rate."""


def _turntable(cfg: CompareConfig, scene: EvalScene, method: Method, out: Path) -> None:
    """A GIF of a 3D method's scene on the input circle, for the first scenes."""
    from distill.export import to_uint8, write_videos

    if scene.index >= cfg.turntable_scenes or not isinstance(method, SceneMethod):
        return
    cams = circle_path(scene.inputs.cameras, cfg.turntable_frames)
    with torch.no_grad():
        frames = method.render_scene(cams)  # (N, 3, H, W)
    write_videos(to_uint8(frames.float().cpu()), None, out / "turntables" / f"{scene.name}.gif", cfg.fps)


class _GridTiles:
    """The grid's tiles, kept from the scenes and predictions in memory as this process evaluates them."""

    def __init__(self, scenes: int):
        self.scenes = scenes
        self.truth: dict[int, list[Tensor]] = {}  # scene index -> its inputs and the truth at its target, (3, H, W)
        self.predicted: dict[tuple[int, str], Tensor] = {}  # (scene index, method) -> (3, H, W)

    def keep(self, scene: EvalScene, method: str, pred: Tensor) -> None:
        """Keep a first scene's inputs, truth and prediction (T, 3, H, W) at its least-seen target."""
        from pipelines.harness.baseline_methods import least_seen

        if scene.index >= self.scenes:
            return
        k = least_seen(scene.inputs.cameras, scene.targets.cameras)
        self.truth[scene.index] = [img.clone() for img in (*scene.inputs.images, scene.targets.images[k])]
        self.predicted[scene.index, method] = pred[k].clone()

    def rows(self, methods: list[str], scenes: int) -> list[list[Tensor]] | None:
        """Grid rows of the first ``scenes`` scenes, or None when some tile was not predicted here."""
        if any((i, m) not in self.predicted for i in range(scenes) for m in methods):
            return None
        return [[*self.truth[i], *(self.predicted[i, m] for m in methods)] for i in range(scenes)]


def _check(cfg: CompareConfig) -> list[str]:
    known = available_methods()
    unknown = [m for m in cfg.methods if m not in known]
    if unknown:
        raise UserError(f"unknown method(s) {', '.join(unknown)} (available: {', '.join(known)})")
    if not cfg.methods:
        raise UserError("methods is empty: name at least one method")
    stray = sorted(set(cfg.options) - set(cfg.methods))
    if stray:
        raise UserError(f"options given for method(s) not compared: {', '.join(stray)}")
    return cfg.categories or [cfg.data.category]


def compare(cfg: CompareConfig) -> dict | None:
    """Evaluate every method on every category; the main process writes the report and returns it."""
    categories = _check(cfg)
    out = output_dir("compare", cfg.out, f"{'+'.join(categories)}-{cfg.data.views}v")
    procs = processes(cfg.device)
    results: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    tiles = _GridTiles(cfg.grid_scenes)
    for method in cfg.methods:
        start = time.perf_counter()
        per_cat = {}
        for cat in categories:
            model = MODEL_OF.get(method)  # None: a method without a model (nearest-view)
            ecfg = EvaluateConfig(method=method, data=replace(cfg.data, category=cat), out=str(out / cat / method),
                                  checkpoint=getattr(cfg.models, model) if model else None, device=cfg.device,
                                  seed=cfg.seed, options=dict(cfg.options.get(method, {})), lpips_net=cfg.lpips_net,
                                  fid=cfg.fid, resume=cfg.resume)

            def hook(scene: EvalScene, m: Method, pred: Tensor, out: Path, cat=cat, name=method) -> None:
                _turntable(cfg, scene, m, out)
                if cat == categories[0]:
                    tiles.keep(scene, name, pred)

            try:
                per_cat[cat] = evaluate(ecfg, on_scene=hook)
            except CheckpointMissing as err:
                skipped[method] = str(err)
                print(f"skipping {method}: {err}")
                break
        if method not in skipped:
            results[method] = {"per_category": per_cat, "wall_seconds": time.perf_counter() - start}
    if not procs.is_main:
        return None
    report = _report(cfg, categories, out, results, skipped, procs.count, tiles)
    print(report["markdown"])
    return report


def _pooled(method: str, per_cat: dict[str, dict]) -> dict:
    """One summary over every category's scenes (FID/KID stay per category)."""
    if len(per_cat) == 1:
        return next(iter(per_cat.values()))
    rows = [r for s in per_cat.values() for r in s["per_scene"]]
    reason = "FID/KID are computed per category (see the per-category table)"
    first = next(iter(per_cat.values()))
    return {"method": method, "scenes": len(rows), "mean": to_jsonable(summarize([scalar_metrics(r) for r in rows])),
            "set": {"fid": Unavailable(reason).to_json(), "kid": Unavailable(reason).to_json()},
            "availability": first["availability"], "per_scene": rows}


def _report(cfg: CompareConfig, categories: list[str], out: Path, results: dict, skipped: dict,
            n_processes: int, tiles: _GridTiles) -> dict:
    """compare.md, compare.json and grid.png from the gathered summaries."""
    pooled = [_pooled(m, r["per_category"]) for m, r in results.items()]
    d = cfg.data
    lines = [f"# Comparison: {', '.join(categories)}; {pooled[0]['scenes'] if pooled else 0} scenes, "
             f"{d.views} input views, {d.image_size}², {d.split} split of {d.subset}", "",
             markdown_table(pooled)]
    if len(categories) > 1:
        lines += ["## Per category", ""]
        for cat in categories:
            lines += [f"### {cat}", "", markdown_table([r["per_category"][cat] for r in results.values()])]
    if skipped:
        lines += ["## Skipped", ""] + [f"- {m}: {why}" for m, why in skipped.items()] + [""]
    grid = _grid(cfg, categories[0], out, list(results), tiles)
    if grid is not None:
        lines += ["## Views", "", "![grid](grid.png)", "",
                  f"Rows: the first {cfg.grid_scenes} scenes of {categories[0]}, each at its target least seen by "
                  f"the inputs. Columns: {d.views} inputs, ground truth, " + ", ".join(results) + ".", ""]
    gifs = sorted(p.relative_to(out).as_posix() for p in out.glob("*/*/turntables/*.gif"))
    if gifs:
        lines += ["## Turntables", ""] + [f"- [{g}]({g})" for g in gifs] + [""]
    lines += ["Wall time per method: " + ", ".join(f"{m} {r['wall_seconds']:.1f} s" for m, r in results.items()), ""]
    text = "\n".join(lines)
    (out / "compare.md").write_text(text)
    report = {"categories": categories, "data": asdict(cfg.data), "processes": n_processes,
              "machine": machine_info(), "skipped": skipped, "turntables": gifs,
              "methods": {m: {"scenes": p["scenes"], "mean": p["mean"], "set": p.get("set", {}),
                              "wall_seconds": r["wall_seconds"],
                              "per_category": {c: {"scenes": s["scenes"], "mean": s["mean"], "set": s["set"],
                                                   "out": s["out"]} for c, s in r["per_category"].items()}}
                          for (m, r), p in zip(results.items(), pooled)}}
    write_json(out / "compare.json", report)
    report["markdown"], report["out"] = text, str(out)
    return report


def _grid(cfg: CompareConfig, category: str, out: Path, methods: list[str], tiles: _GridTiles):
    """grid.png: per scene, inputs, the ground truth and each method at the least-seen target.

    The tiles are the predictions this process kept in memory; scenes it did not predict (a resumed
    run's earlier scenes, another process's share) are loaded again and their views read back.
    """
    from pipelines.harness.baseline_methods import least_seen

    if cfg.grid_scenes <= 0 or not methods:
        return None
    d = cfg.data
    first = min(cfg.grid_scenes, d.max_scenes or cfg.grid_scenes)
    rows = tiles.rows(methods, first)
    if rows is None:
        rows = []
        for scene in scenes_of(replace(d, category=category, max_scenes=first)):
            k = least_seen(scene.inputs.cameras, scene.targets.cameras)
            frame = scene.targets.frame_numbers[k]
            preds = [tiles.predicted.get((scene.index, m)) for m in methods]
            preds = [p if p is not None else read_predictions(out / category / m, scene.name, [frame])[0]
                     for p, m in zip(preds, methods)]
            rows.append([*scene.inputs.images, scene.targets.images[k], *preds])
    labels = [f"input {i + 1}" for i in range(d.views)] + ["truth", *methods]
    path = out / "grid.png"
    write_image(path, with_column_labels(image_grid(rows, scale=2), labels))
    return path

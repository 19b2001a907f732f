"""``sparsefusion evaluate``: one protocol for every method.

Per scene: V input views, the other evaluation frames as targets; PSNR/SSIM on the masked
image, foreground PSNR, silhouette IoU (rendered opacity > 0.5 for methods that render one, any
channel > 0.1 otherwise, against the mask > 0.5 in the valid region), LPIPS and FID/KID where
their weights exist, seconds per scene.
Finished scenes are kept under ``scenes/`` in the output folder, so a rerun resumes. Under
``torchrun`` the scenes are shared between the processes (``pipelines.common.processes``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from pipelines.common.config import save_config
from pipelines.common.data_config import DataConfig
from pipelines.common.metrics import MetricSuite, Unavailable, summarize, to_jsonable
from pipelines.common.processes import processes
from pipelines.common.runtime import machine_info, output_dir
from pipelines.common.scene_row import SceneRow
from pipelines.harness.methods import Method, MethodContext, build_method
from scenes.co3d import CO3DDataset
from scenes.errors import UserError
from scenes.io import read_image, write_image, write_json
from scenes.splits import EvalScene, eval_scenes, eval_sequences


@dataclass
class EvaluateConfig:
    """Configuration of ``sparsefusion evaluate``."""

    method: str = "nearest-view"
    """Method to evaluate (see `sparsefusion evaluate --list-methods`)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Scenes and views."""
    out: str | None = None
    """Output folder (default outputs/evaluate/<method>-<category>-<views>v)."""
    checkpoint: str | None = None
    """Model folder for learned methods (default: the shipped demo model)."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto."""
    seed: int = 0
    """Seed for stochastic methods."""
    options: dict[str, Any] = field(default_factory=dict)
    """The method's options by name, e.g. options.steps=50 for vldm or dfm (an unknown one is an error)."""
    lpips_net: str = "vgg"
    """LPIPS backbone: vgg (the SparseFusion choice) or alex."""
    fid: bool = True
    """Compute FID/KID over all targets when the Inception weights are present."""
    resume: bool = True
    """Reuse finished scenes found in the output folder."""
    save_images: bool = True
    """Keep every predicted view as PNG under views/<scene>/."""
    shard: list[int] = field(default_factory=lambda: [0, 1])
    """[i, n]: evaluate only scenes whose index is i mod n (separate runs into one folder; a final
    run with the default [0, 1] gathers every finished scene). torchrun shares scenes by itself."""


def _scene_file(out: Path, name: str) -> Path:
    return out / "scenes" / f"{name}.json"


def _pred_paths(out: Path, name: str, frames: list[int]) -> list[Path]:
    return [out / "views" / name / f"{f:06d}.png" for f in frames]


def scene_finished(out: Path, name: str, save_images: bool = True) -> bool:
    """Whether a scene's row (and, when images are kept, every predicted view) is in ``out``."""
    done = _scene_file(out, name)
    if not done.is_file():
        return False
    return not save_images or all(p.is_file() for p in _pred_paths(out, name, json.loads(done.read_text())["targets"]))


def read_predictions(out: Path, name: str, frames: list[int]) -> Tensor:
    """A finished scene's predicted views (T, 3, H, W) in [0, 1], read back from views/<scene>/."""
    return torch.from_numpy(np.stack([read_image(p) for p in _pred_paths(out, name, frames)])).permute(0, 3, 1, 2)


# on_scene(scene, method, predicted views (T, 3, H, W) in [0, 1] on the CPU, out): runs in the process that
# predicted the scene, before its row is written
SceneHook = Callable[[EvalScene, Method, Tensor, Path], None]


def _predict_scene(cfg: EvaluateConfig, out: Path, scene: EvalScene, method: Method, suite: MetricSuite,
                   device: torch.device, on_scene: SceneHook | None) -> None:
    """Predict one scene's targets; write its views, the hook's files and, last, its row."""
    if set(scene.inputs.frame_numbers) & set(scene.targets.frame_numbers):
        raise RuntimeError(f"inputs and targets overlap in {scene.name}")  # never happens
    gt = scene.targets
    torch.manual_seed(cfg.seed + scene.index)
    start = time.perf_counter()
    with torch.no_grad():
        prediction = method.predict(scene.inputs, gt.cameras.to(device))
    seconds = time.perf_counter() - start
    pred, opacity = prediction.images.float().cpu().clamp(0, 1), prediction.opacity
    if pred.shape != gt.images.shape:
        raise RuntimeError(f"{cfg.method} returned {tuple(pred.shape)} for targets {tuple(gt.images.shape)}")
    if opacity is not None:
        opacity = opacity.float().cpu()
        if opacity.shape != gt.masks.shape:
            raise RuntimeError(f"{cfg.method} rendered opacity {tuple(opacity.shape)} for targets {tuple(gt.masks.shape)}")
    row = SceneRow(scene.name, scene.inputs.frame_numbers, seconds, gt.frame_numbers,
                   {"index": scene.index, "silhouette_from": "image" if opacity is None else "opacity",
                    **prediction.stats})
    row.measure(suite.per_image(pred, gt.images, gt.masks, gt.valid, opacity))
    if cfg.save_images:
        for img, p in zip(pred, _pred_paths(out, scene.name, gt.frame_numbers)):
            write_image(p, img.permute(1, 2, 0).numpy())
    if on_scene is not None:
        on_scene(scene, method, pred, out)
    write_json(_scene_file(out, scene.name), row.to_json())


def evaluate(cfg: EvaluateConfig, on_scene: SceneHook | None = None) -> dict | None:
    """Run the evaluation protocol; writes metrics.json and metrics.md; returns the summary.

    Launched as several processes (torchrun), each predicts its share of the scenes and the main
    process gathers them all and returns the summary; the others return None.
    """
    out = output_dir("evaluate", cfg.out, f"{cfg.method}-{cfg.data.category}-{cfg.data.views}v")
    procs = processes(cfg.device)
    i, n = cfg.shard
    if not 0 <= i < n:
        raise UserError(f"shard={cfg.shard} must be [i, n] with 0 <= i < n")
    if procs.is_main:
        save_config(cfg, out)
    method = build_method(cfg.method, MethodContext(procs.device, cfg.checkpoint, cfg.seed, dict(cfg.options)))
    dataset = CO3DDataset(cfg.data.root, cfg.data.category)
    suite = MetricSuite(lpips_net=cfg.lpips_net, device=procs.device, fid=cfg.fid)
    d = cfg.data
    seqs = eval_sequences(dataset, d.subset, d.split, d.max_scenes)
    selected = [k for k in range(len(seqs)) if k % n == i]  # this shard of the run
    todo = {k for k in procs.mine(selected) if not (cfg.resume and scene_finished(out, seqs[k].name, cfg.save_images))}
    scenes = eval_scenes(dataset, seqs, d.views, d.options(), d.eval_frames, skip=lambda k: k not in todo)
    where = f" [process {procs.index + 1}/{procs.count}]" if procs.count > 1 else ""
    kept = len(procs.mine(selected)) - len(todo)
    for scene in tqdm(scenes, total=len(todo), desc=f"evaluate {cfg.method}{where}", unit="scene",
                      postfix={"kept": kept} if kept else None):
        _predict_scene(cfg, out, scene, method, suite, procs.device, on_scene)
    procs.wait()
    if not procs.is_main:
        return None
    return _gather(cfg, out, dataset, [seqs[k] for k in selected], suite)


def _gather(cfg: EvaluateConfig, out: Path, dataset: CO3DDataset, seqs: list, suite: MetricSuite) -> dict:
    """Summary of every selected scene from the rows (and views, for FID/KID) under ``out``."""
    missing = [s.name for s in seqs if not _scene_file(out, s.name).is_file()]
    if missing:
        raise RuntimeError(f"{len(missing)} scenes have no result in {out} (e.g. {missing[0]})")
    rows = [json.loads(_scene_file(out, s.name).read_text()) for s in seqs]
    if suite.collects_set and cfg.save_images:
        d = cfg.data
        for scene in eval_scenes(dataset, seqs, d.views, d.options(), d.eval_frames):
            suite.update_set(read_predictions(out, scene.name, scene.targets.frame_numbers), scene.targets.images)
    sets = suite.set_metrics()
    if suite.collects_set and not cfg.save_images:
        sets = {k: Unavailable("FID/KID are computed from the saved views: set save_images=true") for k in sets}
    summary = {
        "method": cfg.method, "data": asdict(cfg.data), "scenes": len(rows),
        "mean": to_jsonable(summarize([scalar_metrics(r) for r in rows])),
        "set": {k: to_jsonable(v) for k, v in sets.items()},
        "availability": suite.availability(), "machine": machine_info(),
        "per_scene": [{k: v for k, v in r.items() if k != "per_target"} for r in rows],
    }
    write_json(out / "metrics.json", summary)
    (out / "metrics.md").write_text(markdown_table([summary]))
    summary["out"] = str(out)
    return summary


def scalar_metrics(row: dict) -> dict:
    """The metric values of a scene row, with JSON 'unavailable' records turned back into Unavailable."""
    out = {}
    for k, v in row.items():
        if isinstance(v, dict) and v.get("available") is False:
            out[k] = Unavailable(v["reason"])
        elif isinstance(v, (int, float)) and k != "index":
            out[k] = v
    return out


def _fmt(value, digits: int = 2) -> str:
    if isinstance(value, dict) and not value.get("available", True):
        return "n/a"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}"
    return "n/a" if value is None else str(value)


def run(cfg: EvaluateConfig) -> dict | None:
    """``sparsefusion evaluate``: the protocol, then its table printed by the main process."""
    summary = evaluate(cfg)
    if summary is not None:
        print(markdown_table([summary]))
    return summary


def markdown_table(summaries: list[dict]) -> str:
    """Markdown table of mean metrics, one row per method, with unavailable metrics explained."""
    cols = [("psnr", "PSNR", 2), ("ssim", "SSIM", 3), ("psnr_fg", "PSNR fg", 2), ("silhouette_iou", "IoU", 3),
            ("lpips", "LPIPS", 3),
            ("fid", "FID", 1), ("kid", "KID", 4), ("seconds", "s/scene", 2),
            ("unet_evaluations", "UNet evals/scene", 0)]
    lines = ["| method | scenes | " + " | ".join(c[1] for c in cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    notes = {}
    for s in summaries:
        vals = {**s["mean"], **s.get("set", {})}
        lines.append(f"| {s['method']} | {s['scenes']} | " + " | ".join(_fmt(vals.get(k), dg) for k, _, dg in cols) + " |")
        for k, reason in s.get("availability", {}).items():
            if reason != "ok":
                notes[k] = reason
    sources = {}
    for s in summaries:
        rows = s.get("per_scene") or [{}]
        sources.setdefault(rows[0].get("silhouette_from", "image"), []).append(s["method"])
    how = {"opacity": "rendered opacity > 0.5", "image": "any channel > 0.1"}
    lines += [""] + [f"- {k}: unavailable: {r}" for k, r in sorted(notes.items())]
    lines.append("- IoU: silhouette against the mask > 0.5 in the valid region; predicted silhouette "
                 + "; ".join(f"{how[k]} ({', '.join(v)})" for k, v in sorted(sources.items(), reverse=True)))
    return "\n".join(lines) + "\n"

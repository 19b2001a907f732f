"""``sparsefusion reconstruct``: a field per scene from its input views, with everything it can show.

Per scene, under ``<out>/<scene>/``: ``field.safetensors`` and ``config.yaml``, ``turntable.mp4``
and ``.gif``, ``views/`` and ``depth/`` PNGs (at the target cameras, else the turntable's),
``metrics.json`` (against ground truth when there is some; written last: a scene with it is
finished) and ``mesh.ply``. ``state.pt`` is the resumable checkpoint while the scene runs.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from distill.export import depth_to_uint16, extract_mesh, to_uint8, write_ply, write_videos
from distill.render import render_views
from pipelines.common.config import save_config
from pipelines.common.data_config import DataConfig
from pipelines.common.metrics import MetricSuite, perceptual_loss, summarize, to_jsonable
from pipelines.common.processes import processes
from pipelines.common.runtime import machine_info, output_dir
from pipelines.common.scene_row import SceneRow
from pipelines.reconstruction.fit import FitResult, FitSceneConfig, fit_scene
from scenes.co3d import CO3DDataset, Views
from scenes.custom import load_custom_views
from scenes.errors import UserError
from scenes.io import atomic_path, write_image, write_json
from scenes.normalize import circle_path
from scenes.render import BOX_HALF_SIZE
from scenes.splits import eval_scenes, eval_sequences

DEPTH_FAR = 2 * 3.0 + 2 * BOX_HALF_SIZE  # scene units mapped to 65535 in depth PNGs


@dataclass
class OutputConfig:
    """What is written per scene besides the field."""

    turntable_frames: int = 36
    """Frames of the turntable (a circle through the input cameras)."""
    fps: int = 12
    """Turntable frame rate."""
    mesh: bool = True
    """Extract mesh.ply by marching cubes on the density grid."""
    mesh_resolution: int = 128
    """Density grid cells per side of the scene box."""
    mesh_threshold: float = 10.0
    """Density level of the surface."""


@dataclass
class ReconstructConfig(FitSceneConfig):
    """Configuration of ``sparsefusion reconstruct``."""

    data: DataConfig = dc_field(default_factory=DataConfig)
    """Dataset scenes (ignored with cameras=..., but for the reader options data.*)."""
    scene: str | None = None
    """Only this sequence of the dataset split."""
    images: list[str] | None = None
    """Custom input: image files, each matched to the camera file's frame that names it (masks from alpha or masks=...)."""
    cameras: str | None = None
    """Custom input: OpenCV camera JSON or transforms.json (without images: every frame, or frames=...)."""
    frames: list[int] | None = None
    """Custom input: use these frames of the camera file, by index from 0 (e.g. [3, 17, 42])."""
    masks: list[str] | None = None
    """Custom input: mask files, one per input view."""
    checkpoint: str | None = None
    """VLDM folder (default: the shipped demo model)."""
    out: str | None = None
    """Output folder (default outputs/reconstruct/<mode>-<category>-<views>v)."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto."""
    seed: int = 0
    """Seed of the field initialisation, ray sampling and noise."""
    resume: bool = False
    """Skip finished scenes and continue unfinished ones from their last checkpoint."""
    output: OutputConfig = dc_field(default_factory=OutputConfig)
    """Exports."""


@dataclass
class ReconScene:
    """A scene to reconstruct: inputs, optional target cameras and ground truth."""

    name: str
    inputs: Views
    targets: Views | None = None


def _custom(cfg: ReconstructConfig) -> bool:
    """Whether the config names custom input (a camera file, with or without images) rather than dataset scenes."""
    return bool(cfg.images or cfg.cameras)


def _sequences(cfg: ReconstructConfig) -> tuple[CO3DDataset | None, list]:
    """The dataset and the evaluation sequences the config reads ((None, []) for custom input)."""
    if cfg.images and not cfg.cameras:
        raise UserError("images=... needs cameras=<camera JSON or transforms.json>")
    if cfg.frames is not None and not cfg.cameras:
        raise UserError("frames=... picks frames of a camera file; give cameras=<camera JSON or transforms.json>")
    if _custom(cfg):
        return None, []
    d = cfg.data
    dataset = CO3DDataset(d.root, d.category)
    return dataset, eval_sequences(dataset, d.subset, d.split, None if cfg.scene else d.max_scenes)


def _selection(cfg: ReconstructConfig, seqs: list) -> list[str]:
    """Names of the scenes the config selects, in order (validates --scene)."""
    if _custom(cfg):
        return ["custom"]
    names = [s.name for s in seqs]
    if cfg.scene and cfg.scene not in names:
        d = cfg.data
        raise UserError(f"scene {cfg.scene!r} is not in {d.category}/{d.subset}/{d.split} "
                        f"({len(names)} scenes, e.g. {', '.join(names[:3])})")
    return [cfg.scene] if cfg.scene else names


def _scenes(cfg: ReconstructConfig, keep: set[str], dataset: CO3DDataset | None, seqs: list):
    """The selected scenes named in ``keep``, loaded one by one (custom input or dataset scenes)."""
    if _custom(cfg):
        if "custom" in keep:
            yield ReconScene("custom", load_custom_views(cfg.images, cfg.cameras, cfg.masks, cfg.data.options(),
                                                         cfg.frames))
        return
    d = cfg.data
    skip = lambda i: seqs[i].name not in keep  # noqa: E731
    for sc in eval_scenes(dataset, seqs, d.views, d.options(), d.eval_frames, skip=skip):
        yield ReconScene(sc.name, sc.inputs, sc.targets)


def write_depth(path: Path, depth: np.ndarray) -> None:
    """A uint16 (H, W) depth image as 16-bit PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(depth).save(tmp, format="PNG")


def write_scene_outputs(folder: Path, scene: ReconScene, fit: FitResult, cfg: ReconstructConfig,
                        suite: MetricSuite) -> dict:
    """Field, turntable, views, depth, mesh and metrics of a fitted scene; returns the metrics row."""
    from safetensors.torch import save_file

    with atomic_path(folder / "field.safetensors") as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in fit.field.state_dict().items()}, str(tmp))
    save_config(cfg, folder)
    turn = circle_path(scene.inputs.cameras, cfg.output.turntable_frames)
    rgb, depth, opacity = render_views(fit.field, turn, fit.sampler)
    write_videos(to_uint8(rgb), folder / "turntable.mp4", folder / "turntable.gif", cfg.output.fps)
    names = [f"turntable_{k:03d}" for k in range(len(turn))]  # without targets, the views are the turntable's
    if scene.targets is not None:
        names = [f"{f:06d}" for f in scene.targets.frame_numbers]
        rgb, depth, opacity = render_views(fit.field, scene.targets.cameras, fit.sampler)
    for name, img, dep in zip(names, to_uint8(rgb), depth_to_uint16(depth, opacity, DEPTH_FAR)):
        write_image(folder / "views" / f"{name}.png", img)
        write_depth(folder / "depth" / f"{name}.png", dep)
    row = SceneRow(scene.name, scene.inputs.frame_numbers, fit.seconds, extras={
        "mode": cfg.mode, "iterations": fit.iterations, "unet_evaluations": fit.unet_evaluations,
        "resumed_from": fit.resumed_from, "depth_png_far": DEPTH_FAR,
        "normalization": scene.inputs.transform.to_dict() if scene.inputs.transform else None})
    if scene.targets is not None:
        gt = scene.targets
        row.targets = gt.frame_numbers
        row.measure(suite.per_image(rgb.cpu().clamp(0, 1), gt.images, gt.masks, gt.valid))
    if cfg.output.mesh:
        verts, faces, colours = extract_mesh(fit.field, cfg.output.mesh_resolution, cfg.output.mesh_threshold,
                                             fit.field.half_size)
        write_ply(folder / "mesh.ply", verts, faces, colours)
        row.extras["mesh"] = {"vertices": len(verts), "faces": len(faces)}
    record = row.to_json()
    write_json(folder / "metrics.json", record)
    return record


def load_teacher_model(cfg: ReconstructConfig, device: torch.device):
    """The VLDM for the teacher modes (None for photometric)."""
    if cfg.mode == "photometric":
        return None
    from vldm.load import load_vldm

    return load_vldm(cfg.checkpoint, device)


def training_perceptual(cfg: FitSceneConfig, device: torch.device):
    """LPIPS-VGG for the fusion loss, or None with one warning line when it cannot be used."""
    if cfg.mode != "sparsefusion" or not cfg.perceptual or cfg.distill.perceptual_weight == 0:
        return None
    fn, reason = perceptual_loss("vgg", device)
    if fn is None:
        print(f"warning: {reason}", file=sys.stderr)
    return fn


def run(cfg: ReconstructConfig) -> dict | None:
    """Reconstruct every selected scene; writes per-scene outputs and summary.json.

    Under torchrun each process reconstructs every n-th scene; the main process writes the summary.
    """
    name = "custom" if _custom(cfg) else f"{cfg.mode}-{cfg.data.category}-{cfg.data.views}v"
    out = output_dir("reconstruct", cfg.out, name)
    procs = processes(cfg.device)
    if procs.is_main:
        save_config(cfg, out)
    device = procs.device
    dataset, seqs = _sequences(cfg)
    names = _selection(cfg, seqs)
    mine = procs.mine(names)
    todo = [n for n in mine if not (cfg.resume and (out / n / "metrics.json").is_file())]
    for n in sorted(set(mine) - set(todo)):
        print(f"{n}: finished earlier, kept ({out / n / 'metrics.json'})")
    scenes = _scenes(cfg, set(todo), dataset, seqs)
    first = next(scenes, None)  # validate the input before loading any model
    if first is not None:
        pipe = load_teacher_model(cfg, device)
        perceptual = training_perceptual(cfg, device)
        suite = MetricSuite(device=device, fid=False)
        for scene in [first, *scenes]:
            folder = out / scene.name
            fit = fit_scene(scene.inputs, None if scene.targets is None else scene.targets.cameras, cfg, device, pipe,
                            perceptual, state_path=folder / "state.pt", resume=cfg.resume, seed=cfg.seed)
            row = write_scene_outputs(folder, scene, fit, cfg, suite)
            (folder / "state.pt").unlink(missing_ok=True)
            metric = f", PSNR {row['psnr']:.2f}" if "psnr" in row else ""
            print(f"{scene.name}: {fit.iterations} iterations in {fit.seconds:.1f} s, "
                  f"{fit.unet_evaluations} UNet evaluations{metric} -> {folder}")
    procs.wait()
    if not procs.is_main:
        return None
    rows = [json.loads((out / n / "metrics.json").read_text()) for n in names]
    summary = {"mode": cfg.mode, "scenes": len(rows), "machine": machine_info(), "processes": procs.count,
               "mean": to_jsonable(summarize([{k: v for k, v in r.items() if isinstance(v, (int, float))}
                                              for r in rows])),
               "per_scene": [{k: v for k, v in r.items() if k != "per_target"} for r in rows]}
    write_json(out / "summary.json", summary)
    summary["out"] = str(out)
    print(f"results in {out}")
    return summary

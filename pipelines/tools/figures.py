"""``sparsefusion figure``: image grids that show what a model does, from the shared evaluation split.

``kind=vldm-samples``: per object a row of input views, ground truth, the EFT's RGB and VLDM
samples with different seeds, all at the same target camera.
``kind=baselines``: per object a row of input views, ground truth, pixelNeRF and DFM samples
with different seeds, at the target camera least seen by the inputs (the one DFM denoises).
``kind=dfm-turntable``: a GIF of one object's DFM scene sampled autoregressively around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pipelines.common.data_config import DataConfig, scenes_of
from pipelines.common.runtime import resolve_device
from pipelines.harness.grid import image_grid
from pipelines.harness.methods import MethodContext
from scenes.errors import UserError
from scenes.io import write_image


@dataclass
class FigureConfig:
    """Configuration of ``sparsefusion figure``."""

    kind: str = "vldm-samples"
    """Which figure: vldm-samples, baselines or dfm-turntable."""
    data: DataConfig = field(default_factory=lambda: DataConfig(max_scenes=6))
    """Scenes (one row each) and views."""
    checkpoint: str | None = None
    """Model folder (default: the shipped demo model; vldm-samples: the VLDM, the others: the DFM)."""
    pixelnerf_checkpoint: str | None = None
    """pixelNeRF folder of the baselines figure (default: the shipped demo model)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """One VLDM sample per seed."""
    steps: int = 25
    """DDIM steps per sample."""
    path_views: int = 8
    """dfm-turntable: views sampled one after the other around the object, each joining the contexts
    (the demo DFM keeps its opacity over 8: last/first 102 %, docs/baselines.md)."""
    frames: int = 48
    """dfm-turntable: frames of the GIF."""
    target: int = 0
    """Which target view of each scene is shown (index among the targets)."""
    scale: int = 2
    """Nearest-neighbour upscaling of every tile."""
    device: str = "auto"
    """cpu, cuda or auto."""
    out: str = "docs/images/vldm_samples.png"
    """Output PNG."""



def vldm_samples(cfg: FigureConfig) -> np.ndarray:
    """Rows: inputs, ground truth, EFT RGB, one VLDM sample per seed."""
    from pipelines.harness.vldm_methods import EFTMethod, VLDMSampleMethod

    device = resolve_device(cfg.device)
    eft = EFTMethod(MethodContext(device, cfg.checkpoint))
    sampler = VLDMSampleMethod(MethodContext(device, cfg.checkpoint), steps=cfg.steps, pipe=eft.pipe)
    rows = []
    for scene in scenes_of(cfg.data):
        target = scene.targets.select([cfg.target])
        row = [*scene.inputs.images, target.images[0], eft.predict(scene.inputs, target.cameras).images[0]]
        for seed in cfg.seeds:
            sampler.seed = seed
            row.append(sampler.predict(scene.inputs, target.cameras).images[0])
        rows.append(row)
    return image_grid(rows, scale=cfg.scale)


def baselines(cfg: FigureConfig) -> np.ndarray:
    """Rows: inputs, ground truth, pixelNeRF, one DFM sample per seed (at the least-seen target)."""
    from pipelines.harness.baseline_methods import DFMMethod, PixelNeRFMethod, least_seen

    device = resolve_device(cfg.device)
    pn = PixelNeRFMethod(MethodContext(device, cfg.pixelnerf_checkpoint))
    dfm = DFMMethod(MethodContext(device, cfg.checkpoint), steps=cfg.steps)
    rows = []
    for scene in scenes_of(cfg.data):
        target = scene.targets.select([least_seen(scene.inputs.cameras, scene.targets.cameras)])
        row = [*scene.inputs.images, target.images[0], pn.predict(scene.inputs, target.cameras).images[0]]
        for seed in cfg.seeds:
            dfm.seed = seed
            row.append(dfm.predict(scene.inputs, target.cameras).images[0])
        rows.append(row)
    return image_grid(rows, scale=cfg.scale)


def dfm_turntable(cfg: FigureConfig) -> Tensor:
    """Frames (N, 3, H, W) of the first scene's DFM field, sampled autoregressively on a circle."""
    from baselines.dfm_sampling import sample_autoregressive
    from baselines.load import load_dfm
    from scenes.normalize import circle_path

    device = resolve_device(cfg.device)
    model = load_dfm(cfg.checkpoint, device)
    scene = next(scenes_of(cfg.data))
    every = circle_path(scene.inputs.cameras, cfg.frames)
    step = max(1, cfg.frames // (cfg.path_views + 1))
    path = every[list(range(step, step * (cfg.path_views + 1), step))[: cfg.path_views]]
    g = torch.Generator(device).manual_seed(cfg.seeds[0])
    opacities: list[float] = []
    generated, last = sample_autoregressive(model, scene.inputs.images, scene.inputs.cameras.to(device), path,
                                            cfg.steps, g, opacities=opacities)  # (P, 3, s, s)
    print("dfm-turntable: mean opacity of the generated views in path order: "
          + ", ".join(f"{o:.3f}" for o in opacities)
          + (f" (last/first {opacities[-1] / opacities[0]:.0%})" if opacities and opacities[0] > 0 else ""))
    s = model.config.image_size
    frames = model.render_scene(last.scene, every.resize(s, s))  # (N, 3, s, s)
    if float(frames.amax()) < 0.5 / 255:  # every GIF pixel would be 0: the sampled field has no density left
        means = ", ".join(f"{float(m):.4f}" for m in generated.mean(dim=(1, 2, 3)))
        raise UserError(f"dfm-turntable: the autoregressively sampled scene is empty, every frame would be black. "
                        f"Mean of the {len(generated)} generated views in path order: {means}. Each generated view "
                        f"joins the contexts, and where it is black the field loses density: a model whose samples "
                        f"shrink empties the scene. Try fewer path_views or a better-trained model.")
    frames = F.interpolate(frames, scale_factor=cfg.scale, mode="bilinear", align_corners=False)
    return frames.clamp(0, 1).cpu()



FIGURES = {"vldm-samples": vldm_samples, "baselines": baselines}
VIDEOS = {"dfm-turntable": dfm_turntable}


def run(cfg: FigureConfig) -> None:
    """Draw the figure (PNG) or video (GIF) and write it."""
    if cfg.kind in VIDEOS:
        from distill.export import to_uint8, write_videos

        if not cfg.out.endswith(".gif"):
            raise UserError(f"kind={cfg.kind} writes a GIF: give out=<name>.gif (got {cfg.out})")
        write_videos(to_uint8(VIDEOS[cfg.kind](cfg)), None, Path(cfg.out), fps=12)
    elif cfg.kind in FIGURES:
        write_image(cfg.out, FIGURES[cfg.kind](cfg))
    else:
        raise UserError(f"unknown figure kind {cfg.kind!r} (one of {', '.join([*FIGURES, *VIDEOS])})")
    print(f"figure in {cfg.out}")

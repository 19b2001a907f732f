"""``sparsefusion figure``: image grids that show what a model does, from the shared evaluation split.

``kind=vldm-samples``: per object a row of input views, ground truth, the EFT's RGB and VLDM
samples with different seeds, all at the same target camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from scenes.co3d import CO3DDataset
from scenes.errors import UserError
from scenes.io import write_image
from scenes.splits import eval_scenes, eval_sequences

from .evaluate import DataConfig
from .methods import MethodContext
from .runtime import resolve_device


@dataclass
class FigureConfig:
    """Configuration of ``sparsefusion figure``."""

    kind: str = "vldm-samples"
    """Which figure: vldm-samples."""
    data: DataConfig = field(default_factory=lambda: DataConfig(max_scenes=6))
    """Scenes (one row each) and views."""
    checkpoint: str | None = None
    """Model folder (default: the shipped demo model)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """One VLDM sample per seed."""
    steps: int = 25
    """DDIM steps per sample."""
    target: int = 0
    """Which target view of each scene is shown (index among the targets)."""
    scale: int = 2
    """Nearest-neighbour upscaling of every tile."""
    device: str = "auto"
    """cpu, cuda or auto."""
    out: str = "docs/images/vldm_samples.png"
    """Output PNG."""


def image_grid(rows: list[list[Tensor]], pad: int = 2, scale: int = 1) -> np.ndarray:
    """Rows of images (3, H, W) in [0, 1] -> one (H', W', 3) array with white gutters."""
    h, w = rows[0][0].shape[-2:]
    ncol = max(len(r) for r in rows)
    canvas = torch.ones(3, len(rows) * (h + pad) + pad, ncol * (w + pad) + pad)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[:, y:y + h, x:x + w] = img.float().cpu().clamp(0, 1)
    if scale > 1:
        canvas = F.interpolate(canvas[None], scale_factor=scale, mode="nearest")[0]
    return canvas.permute(1, 2, 0).numpy()


def vldm_samples(cfg: FigureConfig) -> np.ndarray:
    """Rows: inputs, ground truth, EFT RGB, one VLDM sample per seed."""
    from .vldm_methods import EFTMethod, VLDMSampleMethod

    device = resolve_device(cfg.device)
    eft = EFTMethod(MethodContext(device, cfg.checkpoint))
    sampler = VLDMSampleMethod(MethodContext(device, cfg.checkpoint), steps=cfg.steps, pipe=eft.pipe)
    ds = CO3DDataset(cfg.data.root, cfg.data.category)
    d = cfg.data
    rows = []
    for scene in eval_scenes(ds, eval_sequences(ds, d.subset, d.split, d.max_scenes), d.views, d.options(), d.eval_frames):
        target = scene.targets.select([cfg.target])
        row = [*scene.inputs.images, target.images[0], eft.predict(scene.inputs, target.cameras)[0]]
        for seed in cfg.seeds:
            sampler.seed = seed
            row.append(sampler.predict(scene.inputs, target.cameras)[0])
        rows.append(row)
    return image_grid(rows, scale=cfg.scale)


FIGURES = {"vldm-samples": vldm_samples}


def run(cfg: FigureConfig) -> None:
    """Draw the figure and write it."""
    if cfg.kind not in FIGURES:
        raise UserError(f"unknown figure kind {cfg.kind!r} (one of {', '.join(FIGURES)})")
    write_image(cfg.out, FIGURES[cfg.kind](cfg))
    print(f"figure in {cfg.out}")

"""Image grids for figures and the comparison: tiles in rows, white gutters, column labels."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


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


def with_column_labels(grid, labels: list[str], pad: int = 2 * 2, height: int = 14):
    """A white header strip with one label per column over an image_grid (H, W, 3) float array."""
    from PIL import Image, ImageDraw

    h, w, _ = grid.shape
    tile = (w - pad) / len(labels)
    header = Image.new("RGB", (w, height), "white")
    draw = ImageDraw.Draw(header)
    for i, label in enumerate(labels):
        draw.text((pad + i * tile + 2, 1), label, fill="black")
    return np.concatenate([np.asarray(header, np.float32) / 255, grid], 0)

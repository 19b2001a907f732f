"""Loading trained baseline folders for inference, with errors a user can act on."""

from __future__ import annotations

from pathlib import Path

import torch

from scenes.assets import resolve, shipped
from scenes.errors import CheckpointMissing, UserError

DEMO_CHECKPOINTS = shipped("checkpoints", "demo")


def _load(cls, folder: str | Path | None, default: str, command: str, device):
    folder = resolve(folder) if folder else DEMO_CHECKPOINTS / default
    if (folder / "model" / "config.json").is_file():
        folder = folder / "model"
    if not (folder / "config.json").is_file():
        raise CheckpointMissing(f"no {cls.__name__} model at {folder} (expected config.json; train one with "
                                f"`sparsefusion {command}` or pass --checkpoint DIR)")
    if cls.load_config(folder).get("_class_name") != cls.__name__:
        raise UserError(f"{folder} holds a {cls.load_config(folder).get('_class_name')}, not a {cls.__name__}")
    try:
        model = cls.from_pretrained(folder)
    except (ValueError, RuntimeError, OSError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot load the {cls.__name__} at {folder}: {first[:300]}") from None
    return model.to(device).eval()


def load_pixelnerf(folder: str | Path | None = None, device: torch.device | str = "cpu"):
    """A :class:`~baselines.pixelnerf.PixelNeRF` from a train-pixelnerf folder (default: the shipped demo)."""
    from .pixelnerf import PixelNeRF

    return _load(PixelNeRF, folder, "pixelnerf", "train-pixelnerf", device)


def load_dfm(folder: str | Path | None = None, device: torch.device | str = "cpu"):
    """A :class:`~baselines.dfm.DFM` from a train-dfm folder (default: the shipped demo)."""
    from .dfm import DFM

    return _load(DFM, folder, "dfm", "train-dfm", device)

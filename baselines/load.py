"""Loading trained baseline folders for inference, with errors a user can act on."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from scenes.assets import resolve, shipped
from scenes.errors import CheckpointMissing, UserError

DEMO_CHECKPOINTS = shipped("checkpoints", "demo")


def legacy_options(cls, config: dict) -> dict:
    """The options a config.json saved before they existed must load with (the class's ``LEGACY_CONFIG``)."""
    return {k: v for k, v in getattr(cls, "LEGACY_CONFIG", {}).items() if k not in config}


def _fmt(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items()))


def _load(cls, folder: str | Path | None, default: str, command: str, device):
    folder = resolve(folder) if folder else DEMO_CHECKPOINTS / default
    if (folder / "model" / "config.json").is_file():
        folder = folder / "model"
    if not (folder / "config.json").is_file():
        raise CheckpointMissing(f"no {cls.__name__} model at {folder} (expected config.json; train one with "
                                f"`sparsefusion {command}` or pass --checkpoint DIR)")
    config = cls.load_config(folder)
    if config.get("_class_name") != cls.__name__:
        raise UserError(f"{folder} holds a {config.get('_class_name')}, not a {cls.__name__}")
    legacy = legacy_options(cls, config)
    if legacy:
        warnings.warn(f"{folder} is a {cls.__name__} saved before the options {', '.join(sorted(legacy))} existed: "
                      f"loaded as it was trained ({_fmt(legacy)}); retrain it with `sparsefusion {command}` for the "
                      "current architecture", stacklevel=3)
    try:
        model, info = cls.from_pretrained(folder, output_loading_info=True, **legacy)
    except (ValueError, RuntimeError, OSError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot load the {cls.__name__} at {folder}: {first[:300]}") from None
    bad = {k: v for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if (v := info.get(k))}
    if bad:  # diffusers would start such weights at random: never use a half-loaded model
        detail = "; ".join(f"{len(v)} {k.replace('_', ' ')} (e.g. {v[0]})" for k, v in bad.items())
        raise UserError(f"cannot load the {cls.__name__} at {folder}: its weights do not fit its config.json "
                        f"({detail}); retrain it with `sparsefusion {command}`")
    return model.to(device).eval()


def load_pixelnerf(folder: str | Path | None = None, device: torch.device | str = "cpu"):
    """A :class:`~baselines.pixelnerf.PixelNeRF` from a train-pixelnerf folder (default: the shipped demo)."""
    from .pixelnerf import PixelNeRF

    return _load(PixelNeRF, folder, "pixelnerf", "train-pixelnerf", device)


def load_dfm(folder: str | Path | None = None, device: torch.device | str = "cpu"):
    """A :class:`~baselines.dfm.DFM` from a train-dfm folder (default: the shipped demo)."""
    from .dfm import DFM

    return _load(DFM, folder, "dfm", "train-dfm", device)

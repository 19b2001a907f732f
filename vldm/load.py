"""Loading a trained VLDM folder for inference, with errors a user can act on."""

from __future__ import annotations

from pathlib import Path

import torch

from scenes.assets import resolve, shipped
from scenes.errors import CheckpointMissing, UserError

from .pipeline import VLDMPipeline

DEMO_CHECKPOINT = shipped("checkpoints", "demo", "vldm")


def load_vldm(folder: str | Path | None = None, device: torch.device | str = "cpu") -> VLDMPipeline:
    """A :class:`VLDMPipeline` from a folder written by ``sparsefusion train-vldm`` (default: the shipped demo)."""
    folder = resolve(folder) if folder else DEMO_CHECKPOINT
    if (folder / "model" / "model_index.json").is_file():
        folder = folder / "model"
    if not (folder / "model_index.json").is_file():
        raise CheckpointMissing(f"no VLDM model at {folder} (expected model_index.json; train one with "
                        "`sparsefusion train-vldm` or pass --checkpoint DIR)")
    try:
        pipe = VLDMPipeline.from_pretrained(folder)
    except (ValueError, RuntimeError, OSError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot load the VLDM at {folder}: {first[:300]}") from None
    expected = pipe.vae.config.latent_channels + pipe.eft.config.d_model
    if pipe.unet.config.in_channels != expected:
        raise UserError(f"the VLDM at {folder} mixes presets: its UNet takes {pipe.unet.config.in_channels} input "
                        f"channels but its VAE and EFT give {expected}")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)

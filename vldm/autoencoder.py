"""The autoencoder of the latent diffusion model: loading, a small trainable one, encode/decode.

:func:`load_vae` reads a local diffusers ``AutoencoderKL`` folder or a single Stable Diffusion
v1 checkpoint file (full model or VAE only, ``.ckpt``/``.safetensors``) without touching the
network: the architecture is read off the checkpoint's tensor shapes (SD v1: channels
128·(1, 2, 4, 4), 2 blocks per level, 4 latent channels, scale 0.18215) and the original LDM
key names are converted with diffusers' own conversion function. Pickled files are read with
``weights_only=True`` only.

Images are float in [0, 1] at this module's boundary; the VAE sees [-1, 1].
"""

from __future__ import annotations

import json
import math
import pickle
import re
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from torch import Tensor

from scenes.assets import resolve
from scenes.errors import UserError

SD_SCALING_FACTOR = 0.18215
EXPECTED = ("expected a diffusers AutoencoderKL folder (config.json + weights) or a Stable Diffusion v1 "
            "checkpoint file (.ckpt/.safetensors, full model or VAE only)")
_LDM_PREFIXES = ("first_stage_model.", "vae.")
_LDM_REQUIRED = ("encoder.conv_in.weight", "decoder.conv_out.weight", "quant_conv.weight", "post_quant_conv.weight")
_DIFFUSERS_REQUIRED = ("encoder.conv_in.weight", "encoder.down_blocks.0.resnets.0.conv1.weight",
                       "decoder.conv_out.weight", "quant_conv.weight")


# --------------------------------------------------------------------------------- loading
def load_vae(path: str | Path, dtype: torch.dtype | None = torch.float32) -> AutoencoderKL:
    """An AutoencoderKL (eval mode) from a diffusers folder or a single SD-v1-style checkpoint file.

    Never uses the network. ``dtype``: cast the weights (default float32; None keeps the file's).
    """
    path = resolve(path)  # checkpoints/demo/... names the shipped copy from any folder
    if not path.exists():
        raise UserError(f"VAE not found: {path} ({EXPECTED})")
    vae = _load_folder(path) if path.is_dir() else _load_file(path)
    if dtype is not None and vae.dtype != dtype:
        vae = vae.to(dtype)
    return vae.eval()


def _load_folder(path: Path) -> AutoencoderKL:
    if not (path / "config.json").is_file() and (path / "vae" / "config.json").is_file():
        path = path / "vae"  # a whole pipeline folder
    config = path / "config.json"
    if not config.is_file():
        raise UserError(f"{path} is a folder without config.json: {EXPECTED}")
    try:
        cls = json.loads(config.read_text()).get("_class_name")
    except (OSError, ValueError) as err:
        raise UserError(f"{config} is not valid JSON ({err}): {EXPECTED}") from None
    if cls != "AutoencoderKL":
        raise UserError(f"{path} holds a {cls or 'model of unknown class'}, not an AutoencoderKL: {EXPECTED}")
    try:
        return AutoencoderKL.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot load the AutoencoderKL in {path}: {first}") from None


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of a .safetensors file or a pickled checkpoint read with ``weights_only=True``."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as err:
            raise UserError(f"{path} is not a readable safetensors file ({err}): {EXPECTED}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found is None:
            raise UserError(f"{path} is not a PyTorch checkpoint (unpickling failed): {EXPECTED}") from None
        raise UserError(f"{path} cannot be loaded safely: it pickles {found[1]}, which weights_only=True refuses "
                        "(loading never runs code); convert the weights to .safetensors") from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise UserError(f"{path} is not a PyTorch checkpoint ({type(err).__name__}): {EXPECTED}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a state dict: {EXPECTED}")
    return {k: v for k, v in obj.items() if isinstance(k, str) and torch.is_tensor(v)}


def _load_file(path: Path) -> AutoencoderKL:
    sd = read_state_dict(path)
    vae_sd, fmt = _vae_tensors(sd)
    if vae_sd is None:
        raise UserError(f"{path} holds no VAE weights (no first_stage_model.encoder.* or encoder.* keys): {EXPECTED}")
    try:
        if fmt == "ldm":
            config = ldm_vae_config(vae_sd)
            from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

            vae_sd = convert_ldm_vae_checkpoint(vae_sd, config)
        else:
            config = diffusers_vae_config(vae_sd)
    except (KeyError, IndexError, ValueError) as err:
        raise UserError(f"{path}: VAE weights of an unexpected layout ({err}): {EXPECTED}") from None
    with torch.device("meta"):
        vae = AutoencoderKL(**config)
    try:
        vae.load_state_dict(vae_sd, strict=True, assign=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"{path}: VAE weights do not fit an AutoencoderKL ({first}): {EXPECTED}") from None
    return vae.eval()


def _vae_tensors(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor] | None, str]:
    """The VAE's tensors without prefix and their naming: 'ldm' (original) or 'diffusers'."""
    for prefix in _LDM_PREFIXES:
        sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if sub:
            break
    else:
        sub = sd
    if all(k in sub for k in _DIFFUSERS_REQUIRED):
        return sub, "diffusers"
    if all(k in sub for k in _LDM_REQUIRED):
        return {k: v for k, v in sub.items() if k.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv."))}, "ldm"
    return None, ""


def _count(sd: dict, prefix: str) -> int:
    """Number of consecutive indices i with some key starting with ``prefix{i}.``."""
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in sd):
        n += 1
    return n


def ldm_vae_config(sd: dict[str, Tensor]) -> dict:
    """diffusers AutoencoderKL config of an original-LDM-named VAE state dict (SD v1 defaults)."""
    levels = _count(sd, "encoder.down.")
    widths = [sd[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] for i in range(levels)]
    return _config(sd["encoder.conv_in.weight"], sd["decoder.conv_out.weight"], sd["quant_conv.weight"],
                   widths, _count(sd, "encoder.down.0.block."), any(k.startswith("encoder.mid.attn_1.") for k in sd))


def diffusers_vae_config(sd: dict[str, Tensor]) -> dict:
    """diffusers AutoencoderKL config of a diffusers-named VAE state dict."""
    levels = _count(sd, "encoder.down_blocks.")
    widths = [sd[f"encoder.down_blocks.{i}.resnets.0.conv2.weight"].shape[0] for i in range(levels)]
    return _config(sd["encoder.conv_in.weight"], sd["decoder.conv_out.weight"], sd["quant_conv.weight"],
                   widths, _count(sd, "encoder.down_blocks.0.resnets."),
                   any(k.startswith("encoder.mid_block.attentions.0.") for k in sd))


def _config(conv_in: Tensor, conv_out: Tensor, quant: Tensor, widths: list[int], layers: int,
            attention: bool) -> dict:
    return {
        "in_channels": conv_in.shape[1], "out_channels": conv_out.shape[0],
        "down_block_types": ["DownEncoderBlock2D"] * len(widths),
        "up_block_types": ["UpDecoderBlock2D"] * len(widths),
        "block_out_channels": widths, "layers_per_block": layers,
        "latent_channels": quant.shape[0] // 2, "norm_num_groups": _groups(widths),
        "sample_size": 256, "scaling_factor": SD_SCALING_FACTOR, "mid_block_add_attention": attention,
    }


def _groups(widths) -> int:
    """GroupNorm groups: 32 as in SD when every width allows it, else the largest common divisor ≤ 32."""
    return math.gcd(32, *widths)


# --------------------------------------------------------------------------------- small VAE
def small_vae(*, block_out_channels: tuple[int, ...] = (32, 64, 64), latent_channels: int = 4,
              layers_per_block: int = 1, sample_size: int = 64) -> AutoencoderKL:
    """A small SD-structured AutoencoderKL (×2^(levels-1) downsampling: 3 levels, 64² → 16²)."""
    widths = [int(c) for c in block_out_channels]
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * len(widths),
        up_block_types=["UpDecoderBlock2D"] * len(widths), block_out_channels=widths,
        layers_per_block=layers_per_block, latent_channels=latent_channels,
        norm_num_groups=_groups(widths), sample_size=sample_size, scaling_factor=1.0,
    )


def downsampling(vae: AutoencoderKL) -> int:
    """Image side / latent side."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


# --------------------------------------------------------------------------------- encode / decode
def encode(vae: AutoencoderKL, images01: Tensor) -> Tensor:
    """Images (B, 3, H, W) in [0, 1] -> scaled latents (B, C, H/f, W/f) (posterior mode)."""
    x = images01.to(device=vae.device, dtype=vae.dtype) * 2.0 - 1.0
    z = vae.encode(x).latent_dist.mode()
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (z - shift) * vae.config.scaling_factor


def decode(vae: AutoencoderKL, latents: Tensor) -> Tensor:
    """Scaled latents (B, C, h, w) -> images (B, 3, h·f, w·f) in [0, 1]."""
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    z = latents.to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor + shift
    return ((vae.decode(z).sample + 1.0) / 2.0).clamp(0.0, 1.0)


@torch.no_grad()
def fit_scaling_factor(vae: AutoencoderKL, images01: Tensor, batch_size: int = 32) -> float:
    """Set ``scaling_factor`` = 1 / std of the latents of ``images01`` (B, 3, H, W), as SD did.

    Stored in the VAE config (``register_to_config``) so it travels with ``save_pretrained``.
    """
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    latents = []
    for chunk in images01.split(batch_size):
        x = chunk.to(device=vae.device, dtype=vae.dtype) * 2.0 - 1.0
        latents.append((vae.encode(x).latent_dist.mode() - shift).float().cpu())
    std = torch.cat(latents).std().item()
    if not std > 0:
        raise ValueError(f"latents have std {std}; cannot set a scaling factor")
    factor = 1.0 / std
    vae.register_to_config(scaling_factor=factor)
    return factor

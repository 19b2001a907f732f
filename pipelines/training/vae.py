"""``sparsefusion train-vae``: a small AutoencoderKL trained on the training frames (demo/tiny presets).

The paper preset uses Stable Diffusion's VAE (``vldm.autoencoder.load_vae``); without one, this
command trains an SD-structured ``small_vae`` on the foreground-masked training frames with
L1 + MSE reconstruction and a small KL term (SD's ratio: weight 1e-6 on the per-image KL sum
against per-image reconstruction sums), plus LPIPS-VGG only when its weights are present
locally. At the end the scaling factor is set so latents have unit std, the model is saved
under ``model/`` (safetensors), and the reconstruction PSNR on validation frames is reported.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pipelines.common.data_config import DataConfig
from pipelines.common.runtime import machine_info, output_dir
from pipelines.training.model_config import model_kwargs
from pipelines.training.run_config import save_run_config
from pipelines.training.train_config import TrainConfig
from pipelines.training.trainer import Trainer
from scenes.co3d import CO3DDataset
from scenes.errors import UserError
from scenes.io import set_usual_mode, write_json


@dataclass
class VAEModelConfig:
    """Sizes of the small AutoencoderKL (SD structure: ResNet levels, mid attention, 2^(levels-1) downsampling):
    ``small_vae``'s keywords (AutoencoderKL's config names), less sample_size (data.image_size)."""

    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    """Channels per level; 3 levels downsample 4× (64² images -> 16² latents)."""
    latent_channels: int = 4
    """Latent channels (SD: 4)."""
    layers_per_block: int = 1
    """ResNet blocks per encoder level (the decoder has one more)."""


@dataclass
class TrainVAEConfig:
    """Configuration of ``sparsefusion train-vae``."""

    data: DataConfig = field(default_factory=lambda: DataConfig(subset="fewview_train", split="train", image_size=64))
    """Training frames: every frame of the set list's sequences (max_scenes: only the first N; views unused)."""
    model: VAEModelConfig = field(default_factory=VAEModelConfig)
    """Autoencoder sizes."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1000, lr=1e-3, batch_size=16, save_every=250,
                                                                   log_every=25))
    """Optimisation, checkpoints, logging."""
    kl_weight: float = 1e-6
    """Weight of the per-image KL sum relative to per-image reconstruction sums (SD: 1e-6)."""
    lpips_weight: float = 0.1
    """Weight of LPIPS-VGG; used only when the VGG-16 weights are present locally (never downloaded)."""
    val_subset: str = "fewview_dev"
    """Set list of the validation frames."""
    val_split: str = "test"
    """Part of the validation set list."""
    val_frames: int = 200
    """Validation frames spread evenly over the validation sequences (reconstruction PSNR)."""
    scale_frames: int = 256
    """Training frames whose latent std sets the scaling factor."""
    val_loss_frames: int = 64
    """Validation frames of the periodic validation figures (``train.val_every``): PSNR and L1 of decode(encode(x))."""
    cache: bool = True
    """Load all training frames into memory once (uint8) instead of decoding JPEGs every step."""
    out: str | None = None
    """Output folder (default outputs/train-vae/<category>)."""


class VAEWithKL(nn.Module):
    """Training view of an AutoencoderKL: images in [-1, 1] -> (reconstruction from a sampled latent, KL per image)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(x).latent_dist
        return self.vae.decode(posterior.sample()).sample, posterior.kl()


def perceptual_loss(weight: float):
    """LPIPS-VGG when its weights are here, else None and the reason (nothing is downloaded)."""
    from pipelines.common.metrics import load_lpips, lpips_weights_path

    if weight <= 0:
        return None, "off (lpips_weight = 0)"
    path = lpips_weights_path("vgg")
    if not path.is_file():
        return None, f"unavailable: VGG-16 weights not found at {path}"
    return load_lpips("vgg", "cpu", random_backbone=False), "used"


def make_step(cfg: TrainVAEConfig, lpips=None):
    """L1 + MSE + kl_weight·KL (per-image sums, all divided by the pixel values per image) [+ LPIPS]."""

    def step(models, batch, step_index):
        x = batch["image"] * 2.0 - 1.0
        rec, kl = models["vae"](x)
        rec = rec.float()
        l1, mse = (rec - x).abs().mean(), ((rec - x) ** 2).mean()
        kl = kl.float().mean() / x[0].numel()
        loss = l1 + mse + cfg.kl_weight * kl
        logs = {"l1": l1.detach(), "mse": mse.detach(), "kl": kl.detach(), "images": x.shape[0]}
        if lpips is not None:
            p = lpips(rec, x).mean()
            loss = loss + cfg.lpips_weight * p
            logs["lpips"] = p.detach()
        return {"loss": loss, **logs}

    return step


@torch.no_grad()
def reconstruction_psnr(vae, frames, batch_size: int = 32) -> float:
    """Mean PSNR (valid region) of decode(encode(x)) over a frame dataset."""
    from torch.utils.data import DataLoader

    from pipelines.common.metrics import psnr
    from vldm.autoencoder import decode, encode

    values = []
    for batch in DataLoader(frames, batch_size=batch_size):
        rec = decode(vae, encode(vae, batch["image"])).float().cpu()
        values.append(psnr(rec, batch["image"], batch["valid"]))
    return torch.cat(values).mean().item()


@torch.no_grad()
def colour_error(vae, frames, batch_size: int = 32) -> float:
    """Mean absolute error (in [0, 1]) of each object's mean foreground colour, reconstruction against truth.

    Per sequence of ``frames`` (a :class:`TrainFrames`), the mean RGB over its frames' foreground
    pixels (mask > 0.5) of the truth and of decode(encode(x)); the error is averaged over RGB and sequences.
    """
    from vldm.autoencoder import decode, encode

    sums: dict[int, torch.Tensor] = {}  # sequence -> (2, 3) colour sums (truth, reconstruction)
    counts: dict[int, float] = {}
    for start in range(0, len(frames), batch_size):
        idx = range(start, min(start + batch_size, len(frames)))
        items = [frames[i] for i in idx]
        x = torch.stack([it["image"] for it in items])
        fg = torch.stack([(it["mask"] > 0.5) & (it["valid"] > 0.5) for it in items]).float()  # (B, 1, H, W)
        rec = decode(vae, encode(vae, x)).float().cpu()
        for k, i in enumerate(idx):
            s = frames.frames[i][0]
            both = torch.stack([(x[k] * fg[k]).sum((1, 2)), (rec[k] * fg[k]).sum((1, 2))])
            sums[s] = sums.get(s, 0) + both
            counts[s] = counts.get(s, 0.0) + float(fg[k].sum())
    errors = [(v[0] - v[1]).abs().mean() / counts[s] for s, v in sums.items() if counts[s] > 0]
    return float(torch.stack(errors).mean()) if errors else float("nan")


def make_val(frames):
    """The fixed validation figures of a training run: PSNR and L1 of decode(encode(x)) on ``frames``."""
    from pipelines.common.metrics import psnr
    from vldm.autoencoder import decode, encode

    images = torch.stack([frames[i]["image"] for i in range(len(frames))])
    valid = torch.stack([frames[i]["valid"] for i in range(len(frames))])

    def val(models):
        vae = models["vae"].vae
        rec = torch.cat([decode(vae, encode(vae, images[i:i + 32])).float().cpu() for i in range(0, len(images), 32)])
        return {"psnr": psnr(rec, images, valid).mean().item(), "l1": (rec - images).abs().mean().item()}

    return val


def _stack_images(frames, n: int) -> torch.Tensor:
    from scenes.training import TrainFrames

    picked = TrainFrames.evenly(frames.store, n)
    return torch.stack([picked[i]["image"] for i in range(len(picked))])


def save_model(vae, folder: Path) -> None:
    """``save_pretrained`` (safetensors) into a temporary folder renamed into place."""
    tmp = folder.with_name(f".{folder.name}.incomplete")
    shutil.rmtree(tmp, ignore_errors=True)
    vae.save_pretrained(tmp, safe_serialization=True)
    for f in tmp.iterdir():  # safetensors files are written 0600
        set_usual_mode(f)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def run(cfg: TrainVAEConfig) -> dict:
    """Train the autoencoder, fit its scaling factor, save ``model/``, report validation PSNR."""
    from pipelines.training.weights_init import init_from_model
    from scenes.training import FrameStore, TrainFrames, training_sequences
    from vldm.autoencoder import downsampling, fit_scaling_factor, small_vae

    wall = time.perf_counter()
    d = cfg.data
    if d.image_size is None:
        raise UserError("data.image_size must be set for train-vae (frames are batched)")
    factor = 2 ** (len(cfg.model.block_out_channels) - 1)
    if d.image_size % factor:
        raise UserError(f"data.image_size={d.image_size} must be divisible by the VAE's downsampling {factor}")
    out = output_dir("train-vae", cfg.out, d.category)
    save_run_config(cfg, out)
    dataset = CO3DDataset(d.root, d.category)
    train_seqs = training_sequences(dataset, d.subset, d.split, 1)[: d.max_scenes]
    val_seqs = dataset.sequences(cfg.val_subset, cfg.val_split)
    if not val_seqs:
        raise UserError(f"no validation sequences in {d.category}/{cfg.val_subset}/{cfg.val_split}")
    shared = {s.name for s in train_seqs} & {s.name for s in val_seqs}
    if shared:
        raise UserError(f"{len(shared)} validation sequence(s) are also training sequences (e.g. {sorted(shared)[0]})")
    frames = TrainFrames(FrameStore(dataset, train_seqs, d.options(), cache=cfg.cache))

    torch.manual_seed(cfg.train.seed)
    vae = small_vae(**model_kwargs(cfg.model, small_vae, {"sample_size": d.image_size}))
    if cfg.train.init_from:
        init_from_model(cfg.train.init_from, {"": vae})
    trainer = Trainer(cfg.train, {"vae": VAEWithKL(vae)}, out)
    lpips, lpips_state = perceptual_loss(cfg.lpips_weight)
    if lpips is not None:
        lpips = lpips.to(trainer.accelerator.device)
    if trainer.is_main:
        print(f"train-vae: {len(frames)} frames of {len(train_seqs)} sequences, "
              f"{sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M parameters, LPIPS loss {lpips_state}")
    best = {}

    def final(models, ema_models, folder):
        best["vae"] = (ema_models or models)["vae"].vae.eval()

    val_store = FrameStore(dataset, val_seqs, d.options(), cache=False, progress=False)
    val_fn = make_val(TrainFrames.evenly(val_store, cfg.val_loss_frames)) if cfg.train.val_every else None
    result = trainer.fit(frames, make_step(cfg, lpips), final_fn=final, val_fn=val_fn)
    if not trainer.is_main:
        return result
    vae = best["vae"]
    scale = fit_scaling_factor(vae, _stack_images(frames, cfg.scale_frames))
    save_model(vae, out / "model")
    val = TrainFrames.evenly(val_store, cfg.val_frames)
    value = reconstruction_psnr(vae, val)
    colour = colour_error(vae, val)
    metrics = {
        "psnr": value, "colour_mae": colour, "val_frames": len(val), "val_set": f"{cfg.val_subset}/{cfg.val_split}",
        "init_from": cfg.train.init_from,
        "scaling_factor": scale, "latent_shape": [cfg.model.latent_channels, d.image_size // downsampling(vae),
                                                  d.image_size // downsampling(vae)],
        "steps": result["steps"], "train_seconds": result["seconds"], "images_per_s": result["images_per_s"],
        "wall_seconds": time.perf_counter() - wall, "train_frames": len(frames), "train_sequences": len(train_seqs),
        "skipped_frames": frames.store.skipped, "lpips_loss": lpips_state, "final_loss": result["loss"],
        "parameters": sum(p.numel() for p in vae.parameters()), "machine": machine_info(),
    }
    write_json(out / "metrics.json", metrics)
    print(f"train-vae: reconstruction PSNR {value:.2f} dB on {len(val)} validation frames "
          f"({cfg.val_subset}/{cfg.val_split}), per-object mean foreground colour error {colour * 255:.1f}/255; "
          f"scaling factor {scale:.4f}; "
          f"{result['images_per_s']:.1f} images/s; model in {out / 'model'}")
    return {**result, **metrics, "out": str(out)}

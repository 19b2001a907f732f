"""``sparsefusion train-vldm``: joint EFT + VLDM training (DESIGN 5) on the shared accelerate trainer.

Per step: one sequence, 2–5 context views and one query view (a context as often as
SparseFusion's independent draws make it, with ``query_in_contexts``); loss = valid-masked,
P2-weighted ε-MSE of the latent repeated ``diffusion_repeats`` times + pseudo-Huber(EFT RGB,
target at latent resolution). The final model is one ``VLDMPipeline`` folder under ``model/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from pipelines.common.data_config import DataConfig
from pipelines.common.runtime import output_dir
from pipelines.training.model_config import model_kwargs
from pipelines.training.run_config import save_run_config
from pipelines.training.train_config import TrainConfig
from pipelines.training.trainer import Trainer
from pipelines.training.weights_init import init_from_model
from scenes.co3d import CO3DDataset
from scenes.errors import UserError
from scenes.io import write_image
from scenes.losses import pseudo_huber
from scenes.training import TrainViews, cameras_of, collate_examples, fixed_examples


@dataclass
class EFTConfig:
    """The epipolar feature transformer: ``EpipolarFeatureTransformer``'s constructor keywords and saved config."""

    backbone: str = "resnet18"
    """ResNet of the feature encoder (resnet18 or resnet34)."""
    d_model: int = 256
    """EFT transformer width (= feature-map channels fed to the UNet)."""
    n_layers: int = 4
    """Layers of each of the three EFT transformers."""
    n_heads: int = 1
    """Attention heads in the EFT transformers."""
    ffn_dim: int = 256
    """Feed-forward width in the EFT transformers."""
    dropout: float = 0.1
    """Dropout in the EFT transformers."""
    n_samples: int = 20
    """Depth samples per query ray."""
    n_freqs: int = 6
    """Harmonic-embedding frequencies of the ray and depth inputs."""
    depth_radius: float = 1.5
    """Depth samples span the camera-to-origin distance ± this."""


@dataclass
class UNetConfig:
    """The denoising UNet: ``make_unet``'s keywords, saved under these names in the UNet's config.json."""

    block_out_channels: list[int] = field(default_factory=lambda: [256, 512, 1024, 1024])
    """UNet block widths; attention at the last level and the middle."""
    layers_per_block: int = 2
    """ResNet blocks per UNet level."""
    norm_num_groups: int = 32
    """GroupNorm groups in the UNet (must divide every width)."""
    attention_head_dim: int = 64
    """Attention head width in the UNet."""


@dataclass
class VLDMModelConfig:
    """Model sizes (presets scale widths, depths and resolution, not the structure)."""

    vae: str = "checkpoints/demo/vae/model"
    """Frozen autoencoder: a diffusers AutoencoderKL folder or a Stable Diffusion checkpoint file."""
    backbone_weights: str | None = None
    """EFT encoder init: imagenet (torchvision's file in the torch hub folder), a weights file, or random / null."""
    eft: EFTConfig = field(default_factory=EFTConfig)
    """Epipolar feature transformer sizes (its config.json keys)."""
    unet: UNetConfig = field(default_factory=UNetConfig)
    """UNet sizes (its config.json keys; sample size, input and output channels follow the VAE and eft.d_model)."""

    # keys before the model's own names were used (the saved checkpoints/demo/vldm/config.yaml has them)
    RENAMED: ClassVar[dict[str, str]] = {
        "d_model": "eft.d_model", "eft_layers": "eft.n_layers", "eft_heads": "eft.n_heads", "eft_ffn": "eft.ffn_dim",
        "eft_dropout": "eft.dropout", "eft_samples": "eft.n_samples", "unet_channels": "unet.block_out_channels",
        "unet_layers_per_block": "unet.layers_per_block", "unet_norm_groups": "unet.norm_num_groups",
        "unet_head_dim": "unet.attention_head_dim"}


@dataclass
class TrainVLDMConfig:
    """Configuration of ``sparsefusion train-vldm``."""

    data: DataConfig = field(default_factory=lambda: DataConfig(subset="fewview_train", split="train"))
    """Training sequences (SparseFusion: fewview_train / train, sequences with > 10 frames)."""
    model: VLDMModelConfig = field(default_factory=VLDMModelConfig)
    """Model sizes."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1000, lr=5e-5))
    """Optimisation, checkpoints, logging."""
    contexts_min: int = 2
    """Fewest context views per example."""
    contexts_max: int = 5
    """Most context views per example."""
    min_frames: int = 11
    """Sequences with fewer frames are not used (SparseFusion: more than 10)."""
    frames_per_sample: int = 20
    """Random frames of a sequence an example draws its views from."""
    diffusion_repeats: int = 12
    """The query latent is repeated this many times with independent t and noise."""
    cond_drop: float = 0.1
    """Probability of zeroing the conditioning (enables classifier-free guidance)."""
    p2_gamma: float = 0.5
    """P2 weighting: the ε-loss at timestep t is weighted by (p2_k + SNR_t)^−p2_gamma (SparseFusion: 0.5; 0: unweighted)."""
    p2_k: float = 1.0
    """P2 weighting offset k (SparseFusion: 1)."""
    query_in_contexts: bool = True
    """Draw contexts independently of the query, so the query is sometimes a context (SparseFusion)."""
    huber_delta: float = 0.1
    """Pseudo-Huber scale of the EFT RGB loss."""
    cache: bool = True
    """Load all training frames into memory once (small datasets, CPU training)."""
    val_subset: str = "fewview_dev"
    """Set list of the fixed validation examples (``train.val_every``)."""
    val_split: str = "test"
    """Part of the validation set list."""
    val_examples: int = 16
    """Fixed validation examples (contexts, query, t and noise the same at every evaluation)."""
    out: str | None = None
    """Output folder (default outputs/train-vldm/<category>)."""


def build_pipeline(cfg: TrainVLDMConfig):
    """A fresh VLDMPipeline of the configured sizes around the frozen VAE."""
    from scenes.backbone import PixelFeatureEncoder, resolve_backbone_weights
    from vldm.autoencoder import load_vae
    from vldm.diffusion import make_scheduler, make_unet
    from vldm.eft import EpipolarFeatureTransformer
    from vldm.pipeline import VLDMPipeline

    m = cfg.model
    weights = resolve_backbone_weights(m.eft.backbone, m.backbone_weights)  # before any slow loading
    vae = load_vae(m.vae)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    size = cfg.data.image_size
    if size is None or size % factor:
        raise UserError(f"data.image_size must be set and divisible by the VAE factor {factor} (got {size})")
    eft = EpipolarFeatureTransformer(**model_kwargs(m.eft, EpipolarFeatureTransformer))
    if weights:
        eft.encoder = PixelFeatureEncoder(m.eft.backbone, weights)
    else:
        print("EFT backbone: no ImageNet weights given (model.backbone_weights), starting from random weights")
    unet = make_unet(size // factor, vae.config.latent_channels, m.eft.d_model, **model_kwargs(m.unet, make_unet))
    vae.requires_grad_(False).eval()
    return VLDMPipeline(eft, vae, unet, make_scheduler())


def make_step(pipe, cfg: TrainVLDMConfig):
    """The per-example loss: diffusion on the query latent + pseudo-Huber on the EFT RGB."""
    from vldm.autoencoder import encode
    from vldm.diffusion import diffusion_loss, valid_to_latent

    size = (cfg.data.image_size // pipe.vae_factor,) * 2  # build_pipeline checked divisibility
    vae, scheduler = pipe.vae, pipe.scheduler

    def step(models, batch, step_index):
        eft, unet = models["eft"], models["unet"]
        examples = batch if isinstance(batch, list) else [batch]  # train.batch_size > 1: a list
        dev = examples[0]["query_image"].device
        if next(vae.parameters()).device != dev:
            vae.to(dev)
        # the EFT per example (each has its own number of context views), the rest batched
        outs = [eft(ex["context_images"], cameras_of(ex, "context").to(dev), cameras_of(ex, "query").to(dev), size)
                for ex in examples]
        features = torch.cat([o.features for o in outs])  # (B, d, h, w)
        rgb = torch.cat([o.rgb for o in outs])  # (B, 3, h, w)
        query = torch.cat([ex["query_image"] for ex in examples])  # (B, 3, H, W)
        with torch.no_grad():
            latents = encode(vae, query)
        valid = valid_to_latent(torch.cat([ex["query_valid"] for ex in examples]), size)
        d_loss = diffusion_loss(unet, scheduler, latents, features, valid, cfg.diffusion_repeats, cfg.cond_drop,
                                p2_gamma=cfg.p2_gamma, p2_k=cfg.p2_k)
        target = F.interpolate(query, size=size, mode="area")
        rgb_loss = pseudo_huber(rgb, target, cfg.huber_delta, valid)
        return {"loss": d_loss + rgb_loss, "diffusion": d_loss.detach(), "rgb": rgb_loss.detach(),
                "images": len(examples)}

    return step


def make_val(pipe, cfg: TrainVLDMConfig, examples: list[dict]):
    """The fixed validation loss: the training loss (no conditioning dropout) + EFT PSNR on fixed examples."""
    from pipelines.common.metrics import psnr
    from vldm.autoencoder import encode
    from vldm.diffusion import diffusion_loss, valid_to_latent

    size = (cfg.data.image_size // pipe.vae_factor,) * 2

    def val(models):
        eft, unet = models["eft"], models["unet"]
        dev = next(unet.parameters()).device
        g = torch.Generator(dev).manual_seed(0)
        sums = {"loss": 0.0, "diffusion": 0.0, "rgb": 0.0, "eft_psnr": 0.0}
        for ex in examples:
            ctx, query = cameras_of(ex, "context").to(dev), cameras_of(ex, "query").to(dev)
            image, valid_px = ex["query_image"].to(dev), ex["query_valid"].to(dev)
            out = eft(ex["context_images"].to(dev), ctx, query, size)
            valid = valid_to_latent(valid_px, size)
            d = diffusion_loss(unet, pipe.scheduler, encode(pipe.vae.to(dev), image), out.features, valid,
                               cfg.diffusion_repeats, 0.0, generator=g, p2_gamma=cfg.p2_gamma,
                               p2_k=cfg.p2_k).item()
            target = F.interpolate(image, size=size, mode="area")
            r = pseudo_huber(out.rgb, target, cfg.huber_delta, valid).item()
            sums["diffusion"] += d
            sums["rgb"] += r
            sums["loss"] += d + r
            sums["eft_psnr"] += psnr(out.rgb.float().cpu(), target.cpu(), valid.cpu()).mean().item()
        return {k: v / len(examples) for k, v in sums.items()}

    return val


def make_preview(pipe, dataset: TrainViews, out: Path, n: int = 2):
    """Periodic preview grids: per row context views, ground truth, EFT RGB, a 25-step DDIM sample."""

    def preview(models, step_index):
        rows = []
        for i in range(n):
            ex = dataset.example(i, epoch=0)
            ctx, query = cameras_of(ex, "context"), cameras_of(ex, "query")
            pipe.eft, pipe.unet = models["eft"], models["unet"]
            res = pipe(ex["context_images"], ctx, query, num_inference_steps=25,
                       generator=torch.Generator(pipe.unet.device).manual_seed(0))
            tiles = [*ex["context_images"][:2].cpu(), ex["query_image"][0].cpu(), res.eft_rgb[0].cpu(), res.images[0].cpu()]
            rows.append(torch.cat(tiles, dim=2))
        grid = torch.cat(rows, dim=1).permute(1, 2, 0).numpy()
        write_image(out / "samples" / f"step-{step_index:07d}.png", grid)

    return preview


def run(cfg: TrainVLDMConfig) -> dict:
    """Train, checkpoint, and save the final pipeline under ``model/``."""
    out = output_dir("train-vldm", cfg.out, cfg.data.category)
    save_run_config(cfg, out)
    pipe = build_pipeline(cfg)
    ds = CO3DDataset(cfg.data.root, cfg.data.category)
    views = TrainViews(ds, cfg.data.subset, cfg.data.split, cfg.data.options(), min_frames=cfg.min_frames,
                       frames_per_sample=cfg.frames_per_sample, contexts=(cfg.contexts_min, cfg.contexts_max),
                       cache=cfg.cache, seed=cfg.train.seed, query_in_contexts=cfg.query_in_contexts)
    if cfg.train.init_from:
        init_from_model(cfg.train.init_from, {"eft": pipe.eft, "unet": pipe.unet})
    trainer = Trainer(cfg.train, {"eft": pipe.eft, "unet": pipe.unet}, out)
    val_fn = None
    if cfg.train.val_every and trainer.is_main:
        val_fn = make_val(pipe, cfg, fixed_examples(ds, cfg.val_subset, cfg.val_split, cfg.data.options(),
                                                    cfg.val_examples, cfg.min_frames, cfg.frames_per_sample,
                                                    (cfg.contexts_min, cfg.contexts_max), cfg.train.seed))

    def final(models, ema_models, folder):
        best = ema_models or models
        pipe.eft, pipe.unet = best["eft"], best["unet"]
        pipe.save_pretrained(Path(folder) / "model")

    preview = make_preview(pipe, views, out) if cfg.train.preview_every else None
    result = trainer.fit(views, make_step(pipe, cfg), collate_fn=collate_examples, preview_fn=preview, final_fn=final,
                         val_fn=val_fn)
    print(f"model in {out / 'model'}")
    return result

"""``sparsefusion train-pixelnerf``: pixelNeRF on random ray batches, on the shared accelerate trainer.

Per step: one sequence, 1–3 context views and one query view (never a context); ``rays``
random pixels of the query inside its valid region; loss = MSE of the coarse and of the fine
render to those pixels. The final model is one ``PixelNeRF`` folder under ``model/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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
from scenes.training import TrainViews, cameras_of, collate_single, fixed_examples


@dataclass
class PixelNeRFModelConfig:
    """Model sizes: ``PixelNeRF``'s constructor keywords under its names, less image_size (data.image_size),
    plus the init-only ``backbone_weights``."""

    backbone: str = "resnet34"
    """Feature encoder: resnet34 (pixelNeRF) or resnet18."""
    backbone_weights: str | None = None
    """Encoder init: imagenet (torchvision's file in the torch hub folder), a weights file, or random / null."""
    width: int = 512
    """ResnetFC width."""
    n_blocks: int = 5
    """ResnetFC residual blocks."""
    combine_layer: int = 3
    """Blocks before the mean over views."""
    n_coarse: int = 64
    """Stratified samples per ray."""
    n_fine: int = 32
    """Importance samples per ray (re-evaluated with the coarse ones)."""
    norm: str = "batch"
    """Encoder normalisation: batch (torchvision's, for ImageNet weights) or group (no batch statistics;
    what a DFM warm-started from this model uses)."""
    feature_injections: int | None = None
    """Blocks the image feature enters before (null: every block before the mean, the official lin_z)."""
    pos_freq_factor: float = 1.5
    """Lowest positional-encoding frequency (official freq_factor 1.5)."""
    use_viewdirs: bool = True
    """Ray directions in each input view's frame as MLP input (official default: true)."""
    density: str = "softplus"
    """Density activation: softplus (never without a gradient) or relu (official; died in the first steps of
    the demo from a random encoder: a black render)."""


INIT_ONLY = ("backbone_weights",)  # model fields that start the weights and are not saved in config.json


@dataclass
class TrainPixelNeRFConfig:
    """Configuration of ``sparsefusion train-pixelnerf``."""

    data: DataConfig = field(default_factory=lambda: DataConfig(subset="fewview_train", split="train"))
    """Training sequences."""
    model: PixelNeRFModelConfig = field(default_factory=PixelNeRFModelConfig)
    """Model sizes."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1000, lr=1e-4))
    """Optimisation, checkpoints, logging."""
    contexts_min: int = 1
    """Fewest context views per example."""
    contexts_max: int = 3
    """Most context views per example."""
    rays: int = 512
    """Random query pixels rendered per step."""
    min_frames: int = 11
    """Sequences with fewer frames are not used."""
    frames_per_sample: int = 20
    """Random frames of a sequence an example draws its views from."""
    cache: bool = True
    """Load all training frames into memory once (small datasets, CPU training)."""
    val_subset: str = "fewview_dev"
    """Set list of the fixed validation examples (``train.val_every``)."""
    val_split: str = "test"
    """Part of the validation set list."""
    val_examples: int = 8
    """Fixed validation examples (full renders of their queries)."""
    out: str | None = None
    """Output folder (default outputs/train-pixelnerf/<category>)."""


def build_model(cfg: TrainPixelNeRFConfig):
    """A fresh PixelNeRF of the configured sizes."""
    from baselines.pixelnerf import PixelNeRF
    from scenes.backbone import PixelFeatureEncoder, resolve_backbone_weights

    m, size = cfg.model, cfg.data.image_size
    weights = resolve_backbone_weights(m.backbone, m.backbone_weights)
    if size is None:
        raise UserError("data.image_size must be set: the model is trained at one square size")
    if not 0 <= m.combine_layer <= m.n_blocks:
        raise UserError(f"model.combine_layer={m.combine_layer} must lie in [0, model.n_blocks={m.n_blocks}]")
    check_injections(m.feature_injections, m.combine_layer, m.n_blocks)
    model = PixelNeRF(**model_kwargs(m, PixelNeRF, {"image_size": size}, init_only=INIT_ONLY))
    if weights:
        model.encoder = PixelFeatureEncoder(m.backbone, weights, norm=m.norm)
    else:
        print("pixelNeRF backbone: no ImageNet weights given (model.backbone_weights), starting from random weights")
    return model


def check_injections(k: int | None, combine_layer: int, n_blocks: int) -> None:
    """model.feature_injections must name blocks before the mean over views (UserError otherwise)."""
    most = max(1, min(combine_layer, n_blocks))
    if k is not None and not 1 <= k <= most:
        raise UserError(f"model.feature_injections={k} must lie in [1, {most}] (the blocks before the mean over views) "
                        "or be null")


def random_rays(cameras, valid, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` random pixel indices inside the valid region (H·W,) of one camera -> origins, dirs (n, 3), index (n,)."""
    weights = (valid.reshape(-1) > 0.5).float()
    if weights.sum() == 0:
        weights = torch.ones_like(weights)
    index = torch.multinomial(weights, n, replacement=bool(weights.count_nonzero() < n))
    o, d = cameras.rays()
    return o.reshape(-1, 3)[index], d.reshape(-1, 3)[index], index


def make_step(cfg: TrainPixelNeRFConfig):
    """The per-example loss: MSE of the coarse and fine renders of random query rays."""

    def step(models, batch, step_index):
        net = models["pixelnerf"]
        dev = batch["query_image"].device
        ctx, query = cameras_of(batch, "context").to(dev), cameras_of(batch, "query").to(dev)
        o, d, index = random_rays(query, batch["query_valid"][0], cfg.rays)
        target = batch["query_image"][0].reshape(3, -1)[:, index].T  # (n, 3)
        out = net(batch["context_images"], ctx, o, d)
        fine = F.mse_loss(out.rgb, target)
        coarse = F.mse_loss(out.coarse_rgb, target) if out.coarse_rgb is not None else torch.zeros_like(fine)
        return {"loss": fine + coarse, "fine": fine.detach(), "coarse": coarse.detach(), "images": 1}

    return step


def make_val(examples: list[dict]):
    """The fixed validation figures: MSE and PSNR (valid region) of full renders of fixed val queries."""
    from pipelines.common.metrics import psnr

    def val(models):
        net = models["pixelnerf"]
        dev = net.device
        mse = value = 0.0
        for ex in examples:
            ctx, query = cameras_of(ex, "context").to(dev), cameras_of(ex, "query").to(dev)
            pred = net.render(ex["context_images"].to(dev), ctx, query).float().cpu()
            w = ex["query_valid"].expand_as(pred)
            mse += float(((pred - ex["query_image"]) ** 2 * w).sum() / w.sum().clamp_min(1))
            value += psnr(pred, ex["query_image"], ex["query_valid"]).mean().item()
        return {"mse": mse / len(examples), "psnr": value / len(examples)}

    return val


def make_preview(dataset: TrainViews, out: Path, n: int = 2):
    """Periodic preview grids: per row two context views, ground truth, pixelNeRF render."""

    def preview(models, step_index):
        net = models["pixelnerf"]
        rows = []
        for i in range(n):
            ex = dataset.example(i, epoch=0)
            ctx, query = cameras_of(ex, "context"), cameras_of(ex, "query")
            dev = net.device
            pred = net.render(ex["context_images"].to(dev), ctx.to(dev), query.to(dev))
            tiles = [*ex["context_images"][:2], ex["query_image"][0], pred[0].cpu()]
            rows.append(torch.cat(tiles, dim=2))
        write_image(out / "samples" / f"step-{step_index:07d}.png", torch.cat(rows, dim=1).permute(1, 2, 0).numpy())

    return preview


def run(cfg: TrainPixelNeRFConfig) -> dict:
    """Train, checkpoint, and save the final model under ``model/``."""
    out = output_dir("train-pixelnerf", cfg.out, cfg.data.category)
    save_run_config(cfg, out)
    if cfg.rays < 1:
        raise UserError("rays must be >= 1")
    model = build_model(cfg)
    ds = CO3DDataset(cfg.data.root, cfg.data.category)
    views = TrainViews(ds, cfg.data.subset, cfg.data.split, cfg.data.options(), min_frames=cfg.min_frames,
                       frames_per_sample=cfg.frames_per_sample, contexts=(cfg.contexts_min, cfg.contexts_max),
                       cache=cfg.cache, seed=cfg.train.seed)
    if cfg.train.init_from:
        init_from_model(cfg.train.init_from, {"": model})
    trainer = Trainer(cfg.train, {"pixelnerf": model}, out)
    val_fn = None
    if cfg.train.val_every and trainer.is_main:
        val_fn = make_val(fixed_examples(ds, cfg.val_subset, cfg.val_split, cfg.data.options(), cfg.val_examples,
                                         cfg.min_frames, cfg.frames_per_sample, (cfg.contexts_min, cfg.contexts_max),
                                         cfg.train.seed))

    def final(models, ema_models, folder):
        (ema_models or models)["pixelnerf"].save_pretrained(Path(folder) / "model")

    preview = make_preview(views, out) if cfg.train.preview_every else None
    result = trainer.fit(views, make_step(cfg), collate_fn=collate_single, preview_fn=preview, final_fn=final,
                         val_fn=val_fn)
    print(f"model in {out / 'model'}")
    return result

"""``sparsefusion train-dfm``: forward-model diffusion on the shared accelerate trainer.

Per step: one sequence, 1–3 context views and two target views (never contexts). Target 0 is
noised to a uniform t (cosine schedule, 1000 steps); the field conditioned on the contexts and
the noisy target renders one random patch of each target, and x̂0 is that render:
loss = L2(patches) + L2(deterministic context-only render of target 0, full image)
+ ``lpips_weight``·LPIPS-VGG(patches) when its weights are on the machine. Both L2 terms are
taken in [-1, 1] (the official scale: 4× the [0, 1] MSE), so LPIPS at 0.2 has its published
weight. With probability ``cond_drop`` the contexts are filled with grey (0 in [-1, 1], as the
official ``ctxt_rgb * 0``) and the deterministic-render loss is dropped, which is what
classifier-free guidance needs. The draw is per example: each example (one per process and
micro-step at ``train.batch_size`` 1) draws its own; the official draws once per step for the
whole batch. ``warm_start`` copies a trained pixelNeRF in first.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from pipelines.common.data_config import DataConfig
from pipelines.common.runtime import output_dir
from pipelines.training.model_config import model_kwargs
from pipelines.training.pixelnerf import check_injections
from pipelines.training.run_config import save_run_config
from pipelines.training.train_config import TrainConfig
from pipelines.training.trainer import Trainer
from pipelines.training.weights_init import init_from_model
from scenes.co3d import CO3DDataset
from scenes.errors import CheckpointMissing, UserError
from scenes.io import write_image
from scenes.training import TrainViews, cameras_of, collate_single, fixed_examples


@dataclass
class DFMModelConfig:
    """Model sizes: ``DFM``'s constructor keywords under its names, less image_size (data.image_size)."""

    backbone: str = "resnet34"
    """ResNet of the time-conditioned encoder: resnet34 or resnet18 (must match a warm-start pixelNeRF)."""
    width: int = 512
    """ResnetFC width of both fields."""
    n_blocks: int = 5
    """ResnetFC residual blocks."""
    combine_layer: int = 3
    """Blocks before the mean over views."""
    render_features: int = 64
    """Feature channels the fields render besides RGB and σ (the target input has 3+3+1+this)."""
    time_dim: int = 256
    """Width of the sinusoidal time embedding (its MLP doubles it)."""
    n_coarse: int = 64
    """Stratified samples per ray of the denoising field."""
    n_fine: int = 64
    """Importance samples per ray of the denoising field."""
    n_cond: int = 64
    """Samples per ray of the deterministic context-only render."""
    norm: str = "group"
    """Normalisation in the encoder: group (no batch statistics, the denoiser's) or batch (models before issue 13)."""
    high_res: bool = True
    """Full-resolution encoder output refined by a stride-1 skip of x_t and the rendered RGB (official use_high_res)."""
    feature_injections: int | None = None
    """Blocks the image feature enters before (null: every block before the mean, pixelNeRF's lin_z; the official
    DFM field: 1); must be the warm-start pixelNeRF's."""
    pos_freq_factor: float = 1.5
    """Lowest positional-encoding frequency (official: 1.5)."""
    use_viewdirs: bool = True
    """Ray directions in each view's frame as field input (official DFM: false); as the warm-start pixelNeRF."""
    density: str = "softplus"
    """Density activation (softplus or relu); as the warm-start pixelNeRF."""


@dataclass
class TrainDFMConfig:
    """Configuration of ``sparsefusion train-dfm``."""

    data: DataConfig = field(default_factory=lambda: DataConfig(subset="fewview_train", split="train"))
    """Training sequences (data.image_size is the model's image size)."""
    model: DFMModelConfig = field(default_factory=DFMModelConfig)
    """Model sizes."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1000, lr=2e-5, ema=True, ema_decay=0.995))
    """Optimisation, checkpoints, logging (official: Adam 2e-5, EMA 0.995)."""
    warm_start: str | None = None
    """A pixelNeRF folder (from train-pixelnerf) copied into the encoders and fields before step 1."""
    contexts_min: int = 1
    """Fewest context views per example."""
    contexts_max: int = 3
    """Most context views per example (official CO3D: 1–3)."""
    patch: int = 24
    """Side of the random square patch rendered in each of the two targets."""
    lpips_weight: float = 0.2
    """Weight of LPIPS-VGG on the patches (off, with one line, when its weights are missing)."""
    cond_drop: float = 0.0
    """Probability of filling an example's contexts with grey (enables guidance at sampling time; official RE10k: 0.1)."""
    val_subset: str = "fewview_dev"
    """Set list of the fixed validation examples (``train.val_every``)."""
    val_split: str = "test"
    """Part of the validation set list."""
    val_examples: int = 8
    """Fixed validation examples (full renders of their first target at fixed t and noise)."""
    min_frames: int = 11
    """Sequences with fewer frames are not used."""
    frames_per_sample: int = 20
    """Random frames of a sequence an example draws its views from."""
    cache: bool = True
    """Load all training frames into memory once (small datasets, CPU training)."""
    out: str | None = None
    """Output folder (default outputs/train-dfm/<category>)."""


def build_model(cfg: TrainDFMConfig):
    """A fresh DFM of the configured sizes, warm-started from a pixelNeRF when asked."""
    from baselines.dfm import DFM

    m, size = cfg.model, cfg.data.image_size
    if size is None:
        raise UserError("data.image_size must be set: the model is trained at one square size")
    if cfg.patch > size:
        raise UserError(f"patch={cfg.patch} is larger than data.image_size={size}")
    check_injections(m.feature_injections, m.combine_layer, m.n_blocks)
    model = DFM(**model_kwargs(m, DFM, {"image_size": size}))
    if cfg.warm_start:
        from baselines.load import load_pixelnerf

        pn = load_pixelnerf(cfg.warm_start)
        check_warm_start(pn, m, cfg.warm_start)
        note = "" if pn.config.norm == m.norm else (f" (its encoder has {pn.config.norm} norm, this one {m.norm}: "
                                                    "conv weights and norm affines copied, an approximate start)")
        print(f"DFM warm start: {model.warm_start(pn)} tensors copied from the pixelNeRF at {cfg.warm_start}{note}")
    return model


def check_warm_start(pn, m: DFMModelConfig, folder: str) -> None:
    """A pixelNeRF can warm-start this DFM only with the same encoder and field structure (UserError otherwise)."""
    from baselines.pixel_field import default_injections

    mine = {"backbone": m.backbone, "width": m.width, "n_blocks": m.n_blocks, "combine_layer": m.combine_layer,
            "feature_injections": m.feature_injections or default_injections(m.combine_layer, m.n_blocks),
            "pos_freq_factor": m.pos_freq_factor,
            "use_viewdirs": m.use_viewdirs, "density": m.density}
    theirs = {k: pn.config[k] for k in mine if k != "feature_injections"}
    theirs["feature_injections"] = pn.field.injections
    differ = [f"{k}: {theirs[k]} vs {v}" for k, v in mine.items() if theirs[k] != v]
    if differ:
        raise UserError(f"warm_start: the pixelNeRF at {folder} does not match this DFM (pixelNeRF vs model.*): "
                        + "; ".join(differ))


def random_patch_rays(cameras, images: torch.Tensor, patch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One random patch×patch square per camera (N) -> origins, dirs (N·patch², 3) and colours (N·patch², 3)."""
    N, _, H, W = images.shape
    o, d = cameras.rays()  # (N, H, W, 3)
    outs = ([], [], [])
    for n in range(N):
        y = int(torch.randint(0, H - patch + 1, (1,)))
        x = int(torch.randint(0, W - patch + 1, (1,)))
        sl = (n, slice(y, y + patch), slice(x, x + patch))
        outs[0].append(o[sl].reshape(-1, 3))
        outs[1].append(d[sl].reshape(-1, 3))
        outs[2].append(images[n, :, y:y + patch, x:x + patch].reshape(3, -1).T)
    return tuple(torch.cat(t) for t in outs)


def make_step(cfg: TrainDFMConfig, scheduler, perceptual):
    """The per-example loss of DFM (patches of two targets + the deterministic render)."""
    from baselines.dfm_sampling import GREY

    def step(models, batch, step_index):
        net = models["dfm"]
        dev = batch["query_image"].device
        cams = cameras_of(batch, "context").to(dev)
        v = cams.R.shape[0] - 1  # the last "context" of the example is the second target
        ctx_images, ctx = batch["context_images"][:v], cams[list(range(v))]
        target0 = cameras_of(batch, "query").to(dev)
        gt0 = batch["query_image"]  # (1, 3, H, W)
        targets = type(cams).cat([target0, cams[[v]]])
        gts = torch.cat([gt0, batch["context_images"][v:]])
        dropped = torch.rand(()) < cfg.cond_drop  # per example (see the module docstring)
        if dropped:
            ctx_images = torch.full_like(ctx_images, GREY)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (1,), device=dev)
        x_t = scheduler.add_noise(gt0 * 2 - 1, torch.randn_like(gt0), t)
        o, d, colours = random_patch_rays(targets, gts, cfg.patch)
        x0, cond = net(ctx_images, ctx, x_t, t, target0, o, d)
        rgb = F.mse_loss(x0.rgb * 2 - 1, colours * 2 - 1)  # L2 in [-1, 1], as official
        cond_loss = torch.zeros_like(rgb) if dropped else F.mse_loss(cond.rgb * 2 - 1, gt0 * 2 - 1)
        loss = rgb + cond_loss
        logs = {"rgb": rgb.detach(), "cond": cond_loss.detach()}
        if perceptual is not None and cfg.lpips_weight > 0:
            p = cfg.patch
            pred = x0.rgb.reshape(2, p, p, 3).permute(0, 3, 1, 2)
            lp = perceptual(pred, colours.reshape(2, p, p, 3).permute(0, 3, 1, 2)).mean()
            loss = loss + cfg.lpips_weight * lp
            logs["lpips"] = lp.detach()
        return {"loss": loss, **logs, "images": 2}

    return step


VAL_TIMESTEPS = (100, 500, 900)  # the fixed validation examples cycle through these noise levels


def make_val(examples: list[dict], scheduler):
    """The fixed validation figures of DFM at fixed t and noise, full renders of each example's first target.

    ``rgb``: L2 in [-1, 1] of x̂0 (the training loss, on the whole image); ``cond``: the same of the
    deterministic context-only render; ``silhouette_area``: the x̂0 render's opacity > 0.5 area over
    the true mask's (1 is right; a model whose samples shrink the object drifts below 1).
    """
    from pipelines.common.metrics import silhouette, silhouette_area_ratio

    def val(models):
        net = models["dfm"]
        dev = net.device
        g = torch.Generator().manual_seed(0)
        sums = {"rgb": 0.0, "cond": 0.0, "silhouette_area": 0.0}
        for i, ex in enumerate(examples):
            cams = cameras_of(ex, "context").to(dev)
            v = cams.R.shape[0] - 1  # as in training: the last "context" is the second target
            target = cameras_of(ex, "query").to(dev)
            gt = ex["query_image"]  # (1, 3, H, W)
            _, _, H, W = gt.shape
            t = torch.tensor([VAL_TIMESTEPS[i % len(VAL_TIMESTEPS)]])
            x_t = scheduler.add_noise(gt * 2 - 1, torch.randn(gt.shape, generator=g), t)
            o, d = target.rays()  # (1, H, W, 3)
            torch.manual_seed(i)  # the importance samples (the trainer restores the random state after)
            x0, cond = net(ex["context_images"][:v].to(dev), cams[list(range(v))], x_t.to(dev), t.to(dev), target,
                           o.reshape(-1, 3), d.reshape(-1, 3))
            pred = x0.rgb.float().cpu().T.reshape(1, 3, H, W)
            opacity = x0.opacity.float().cpu().T.reshape(1, 1, H, W)
            sums["rgb"] += F.mse_loss(pred * 2 - 1, gt * 2 - 1).item()
            sums["cond"] += F.mse_loss(cond.rgb.float().cpu() * 2 - 1, gt * 2 - 1).item()
            sums["silhouette_area"] += silhouette_area_ratio(silhouette(pred, opacity), ex["query_mask"],
                                                             ex["query_valid"]).item()
        return {k: v / len(examples) for k, v in sums.items()}

    return val


def make_preview(dataset: TrainViews, out: Path, steps: int = 10, n: int = 2):
    """Periodic preview grids: per row two contexts, ground truth, a ``steps``-step DDIM sample."""
    from baselines.dfm_sampling import sample_oneshot

    def preview(models, step_index):
        net = models["dfm"]
        rows = []
        for i in range(n):
            ex = dataset.example(i, epoch=0)
            cams = cameras_of(ex, "context")
            v = len(cams) - 1
            s = sample_oneshot(net, ex["context_images"][:v], cams[list(range(v))], cameras_of(ex, "query"), steps,
                               torch.Generator(net.device).manual_seed(0))
            tiles = [*ex["context_images"][:min(v, 2)], ex["query_image"][0], s.image[0].cpu()]
            rows.append(torch.cat(tiles, dim=2))
        width = max(r.shape[2] for r in rows)
        rows = [F.pad(r, (0, width - r.shape[2])) for r in rows]
        write_image(out / "samples" / f"step-{step_index:07d}.png", torch.cat(rows, dim=1).permute(1, 2, 0).numpy())

    return preview


def _perceptual(cfg: TrainDFMConfig):
    if cfg.lpips_weight == 0:
        return None
    from pipelines.common.metrics import perceptual_loss

    fn, reason = perceptual_loss("vgg")
    if fn is None:
        warnings.warn(f"train-dfm: {reason}", stacklevel=2)
    return fn


def run(cfg: TrainDFMConfig) -> dict:
    """Train, checkpoint, and save the final model under ``model/``."""
    out = output_dir("train-dfm", cfg.out, cfg.data.category)
    save_run_config(cfg, out)
    if not 1 <= cfg.contexts_min <= cfg.contexts_max:
        raise UserError("contexts must satisfy 1 <= contexts_min <= contexts_max")
    try:
        model = build_model(cfg)
    except CheckpointMissing as err:
        raise UserError(f"warm_start: {err}") from None
    ds = CO3DDataset(cfg.data.root, cfg.data.category)
    # one extra "context" per example is the second target view
    views = TrainViews(ds, cfg.data.subset, cfg.data.split, cfg.data.options(), min_frames=cfg.min_frames,
                       frames_per_sample=cfg.frames_per_sample, contexts=(cfg.contexts_min + 1, cfg.contexts_max + 1),
                       cache=cfg.cache, seed=cfg.train.seed)
    if cfg.train.init_from:  # after the warm start: a saved DFM's weights win
        init_from_model(cfg.train.init_from, {"": model})
    trainer = Trainer(cfg.train, {"dfm": model}, out)

    def final(models, ema_models, folder):
        (ema_models or models)["dfm"].save_pretrained(Path(folder) / "model")

    val_fn = None
    if cfg.train.val_every and trainer.is_main:
        val_fn = make_val(fixed_examples(ds, cfg.val_subset, cfg.val_split, cfg.data.options(), cfg.val_examples,
                                         cfg.min_frames, cfg.frames_per_sample,
                                         (cfg.contexts_min + 1, cfg.contexts_max + 1), cfg.train.seed),
                          model.scheduler)
    preview = make_preview(views, out) if cfg.train.preview_every else None
    step = make_step(cfg, model.scheduler, _perceptual(cfg))
    result = trainer.fit(views, step, collate_fn=collate_single, preview_fn=preview, final_fn=final, val_fn=val_fn)
    print(f"model in {out / 'model'}")
    return result

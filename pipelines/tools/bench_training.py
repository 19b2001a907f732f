"""``sparsefusion bench`` figure ``training``: where one training step's time goes, per model.

For each shipped demo model (``vldm``, ``pixelnerf``, ``dfm``, ``vae``), on synthetic inputs of
its demo preset's shapes (cameras on a ring, random pixels: the cost does not depend on the
content), one process, no data loading:

- ``step``: the real training step of its ``train-*`` command (the command's ``make_step`` with
  the demo preset), its backward, gradient clipping and the Adam step, as the trainer runs it;
- each part timed on its own at exactly the shapes the step uses, forward and backward (a
  random upstream gradient for the part's outputs; inputs from other parts detached):

  - vldm: the EFT (ResNet features + three transformers), the frozen VAE's encoding of the
    query, the UNet on the ``diffusion_repeats`` noisy copies, clip + Adam;
  - pixelnerf: the ResNet encoder, the field + volume rendering of the ray batch, clip + Adam;
  - dfm: the context encoder, the deterministic (context-only) render of target 0, the target
    encoder, the denoising field + rendering of the two patches, clip + Adam;
  - vae: the encoder, the decoder, clip + Adam.

  What the step takes beyond their sum is ``other`` (losses, ray and patch sampling, noise).

Each figure is the median of ``repeats`` rounds that each run the step and all the parts in turn
(after a warm-up round), so a busy machine slows the step and its parts alike. Multi-process
costs (the gradient all-reduce of ``torchrun``) are not in it: see docs/training_speed.md.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from torch import Tensor

from pipelines.common.config import load_config, preset_path
from scenes.training import cameras_of

MODELS = ("vldm", "pixelnerf", "dfm", "vae")
CONTEXTS = {"vldm": 3, "pixelnerf": 2, "dfm": 3}  # the middle of each demo preset's range (DFM: + target 1)


def _example(views: int, size: int, device) -> dict:
    """A training example as :class:`scenes.training.TrainViews` gives it: ``views`` contexts + 1 query."""
    from pipelines.tools.bench_cameras import ring_cameras

    cams = ring_cameras(views + 1, size, device)
    g = torch.Generator().manual_seed(0)
    out = {"sequence": "bench", "height": size, "width": size}
    for prefix, plural, sl in (("context", "s", slice(0, views)), ("query", "", slice(views, views + 1))):
        n = sl.stop - sl.start
        out[f"{prefix}_image{plural}"] = torch.rand(n, 3, size, size, generator=g).to(device)
        out[f"{prefix}_mask{plural}"] = torch.ones(n, 1, size, size, device=device)
        out[f"{prefix}_valid"] = torch.ones(n, 1, size, size, device=device)
        out[f"{prefix}_R"], out[f"{prefix}_t"], out[f"{prefix}_K"] = cams.R[sl], cams.t[sl], cams.K[sl]
    return out


def _fwd_bwd(fn: Callable[[], object]) -> Callable[[], None]:
    """A part: ``fn``'s tensor outputs get a random upstream gradient, backward runs."""

    def run():
        outs = fn()
        outs = [o for o in (outs if isinstance(outs, (tuple, list)) else [outs]) if torch.is_tensor(o) and o.requires_grad]
        torch.autograd.backward(outs, [torch.randn_like(o) for o in outs])
    return run


def _optimizer_part(params: list[Tensor]) -> tuple[Callable[[], None], Callable[[], None]]:
    """(clip + Adam step on fresh gradients, the same for the step): the trainer's optimizer work."""
    # a tiny lr: the weights stay what they are; fused where the trainer fuses it
    opt = torch.optim.Adam(params, lr=1e-12, fused=params[0].device.type in ("cpu", "cuda"))

    def finish():
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    grads = [torch.randn_like(p) for p in params]  # made once: drawing them is no part of a step

    def part():
        for p, g in zip(params, grads):
            p.grad = g
        finish()
    return part, finish


def _step(step_fn, models: dict, batch, finish) -> Callable[[], None]:
    def run():
        step_fn(models, batch, 0)["loss"].backward()
        finish()
    return run


def _vldm(device) -> tuple[Callable, dict, int]:
    from pipelines.training.vldm import TrainVLDMConfig, make_step
    from vldm.autoencoder import encode
    from vldm.diffusion import diffusion_loss
    from vldm.load import load_vldm

    cfg = load_config(TrainVLDMConfig, preset_path("train-vldm", "demo"))
    pipe = load_vldm(None, device)
    pipe.eft.train(), pipe.unet.train()
    ex = _example(CONTEXTS["vldm"], pipe.image_size, device)
    size = pipe.latent_size(cameras_of(ex, "query"))
    ctx, query = cameras_of(ex, "context"), cameras_of(ex, "query")
    with torch.no_grad():
        latents = encode(pipe.vae, ex["query_image"])
        feats = pipe.eft(ex["context_images"], ctx, query, size).features
    params = [p for m in (pipe.eft, pipe.unet) for p in m.parameters()]
    opt_part, finish = _optimizer_part(params)
    parts = {
        "EFT": _fwd_bwd(lambda: (lambda o: (o.features, o.rgb))(pipe.eft(ex["context_images"], ctx, query, size))),
        "VAE encode (frozen)": lambda: encode(pipe.vae, ex["query_image"]),
        f"UNet x{cfg.diffusion_repeats}": lambda: diffusion_loss(
            pipe.unet, pipe.scheduler, latents, feats, None, cfg.diffusion_repeats, cfg.cond_drop).backward(),
        "clip + Adam": opt_part,
    }
    step = _step(make_step(pipe, cfg), {"eft": pipe.eft, "unet": pipe.unet}, ex, finish)
    return step, parts, 1


def _pixelnerf(device) -> tuple[Callable, dict, int]:
    from baselines.field_render import render_field
    from baselines.load import load_pixelnerf
    from baselines.pixel_field import ViewFeatures
    from pipelines.training.pixelnerf import TrainPixelNeRFConfig, make_step, random_rays

    cfg = load_config(TrainPixelNeRFConfig, preset_path("train-pixelnerf", "demo"))
    net = load_pixelnerf(None, device).train()
    ex = _example(CONTEXTS["pixelnerf"], net.config.image_size, device)
    ctx = cameras_of(ex, "context")
    o, d, _ = random_rays(cameras_of(ex, "query"), ex["query_valid"][0], cfg.rays)
    with torch.no_grad():
        views = net.encode(ex["context_images"], ctx)
    maps = views.maps.detach().requires_grad_()
    params = list(net.parameters())
    opt_part, finish = _optimizer_part(params)
    parts = {
        "ResNet encoder": _fwd_bwd(lambda: net.encoder(ex["context_images"] * 2 - 1)),
        "field + rendering": _fwd_bwd(lambda: (lambda r: (r.rgb, r.coarse_rgb))(render_field(
            net.field, ViewFeatures(maps, views.cameras), o, d, net.config.n_coarse, net.config.n_fine, True))),
        "clip + Adam": opt_part,
    }
    return _step(make_step(cfg), {"pixelnerf": net}, ex, finish), parts, 1


def _dfm(device) -> tuple[Callable, dict, int]:
    from baselines.load import load_dfm
    from baselines.pixel_field import ViewFeatures
    from pipelines.training.dfm import TrainDFMConfig, make_step, random_patch_rays

    cfg = load_config(TrainDFMConfig, preset_path("train-dfm", "demo"))
    cfg.lpips_weight = 0.0  # the demo trains without it (no VGG weights on the machine)
    net = load_dfm(None, device).train()
    size = cfg.data.image_size
    ex = _example(CONTEXTS["dfm"], size, device)
    cams = cameras_of(ex, "context")
    v = len(cams) - 1
    imgs, ctx, target0 = ex["context_images"][:v], cams[list(range(v))], cameras_of(ex, "query")
    t = torch.tensor([500], device=device)
    x_t = torch.rand_like(ex["query_image"]) * 2 - 1
    o, d, _ = random_patch_rays(type(cams).cat([target0, cams[[v]]]),
                                torch.cat([ex["query_image"], ex["context_images"][v:]]), cfg.patch)
    with torch.no_grad():
        contexts = net.encode_contexts(imgs, ctx)
        cond = net.condition(contexts, target0)
        scene = ViewFeatures.cat([contexts, net.encode_target(x_t, t, target0, cond)])
    ctx_d = ViewFeatures(contexts.maps.detach().requires_grad_(), contexts.cameras, contexts.times)
    scene_d = ViewFeatures(scene.maps.detach().requires_grad_(), scene.cameras, scene.times)
    params = list(net.parameters())
    opt_part, finish = _optimizer_part(params)
    parts = {
        "context encoder": _fwd_bwd(lambda: net.encode_contexts(imgs, ctx).maps),
        "deterministic render": _fwd_bwd(lambda: (lambda c: (c.rgb, c.depth, c.features))(net.condition(ctx_d, target0))),
        "target encoder": _fwd_bwd(lambda: net.encode_target(x_t, t, target0, cond).maps),
        "field + rendering": _fwd_bwd(lambda: (lambda r: (r.rgb, r.coarse_rgb))(net.render_rays(scene_d, o, d, True))),
        "clip + Adam": opt_part,
    }
    return _step(make_step(cfg, net.scheduler, None), {"dfm": net}, ex, finish), parts, 2


def _vae(device) -> tuple[Callable, dict, int]:
    from pipelines.training.vae import TrainVAEConfig, VAEWithKL, make_step
    from vldm.autoencoder import load_vae

    cfg = load_config(TrainVAEConfig, preset_path("train-vae", "demo"))
    vae = load_vae("checkpoints/demo/vae/model").to(device).train().requires_grad_(True)
    n, size = cfg.train.batch_size, cfg.data.image_size
    batch = {"image": torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)}
    x = batch["image"] * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.sample()
    z = z.requires_grad_()
    params = list(vae.parameters())
    opt_part, finish = _optimizer_part(params)
    parts = {
        "encoder": _fwd_bwd(lambda: (lambda p: (p.mean, p.logvar))(vae.encode(x).latent_dist)),
        "decoder": _fwd_bwd(lambda: vae.decode(z).sample),
        "clip + Adam": opt_part,
    }
    return _step(make_step(cfg), {"vae": VAEWithKL(vae)}, batch, finish), parts, n


BUILDERS = {"vldm": _vldm, "pixelnerf": _pixelnerf, "dfm": _dfm, "vae": _vae}


def measure(models: list[str], device: torch.device, repeats: int) -> dict:
    """The ``training`` figure: per model the step's seconds, images/s (one process) and its split."""
    out = {}
    for name in models:
        step, parts, images = BUILDERS[name](device)
        times: dict[str, list[float]] = {"step": [], **{k: [] for k in parts}}
        for r in range(repeats + 1):  # round 0 warms up
            for key, fn in [("step", step), *parts.items()]:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                fn()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if r:
                    times[key].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in times.items()}
        split = {k: med[k] for k in parts}
        split["other"] = max(med["step"] - sum(split.values()), 0.0)
        out[name] = {"step_s": med["step"], "images_per_step": images,
                     "images_per_s": images / max(med["step"], 1e-9), "split_s": split}
    return out


def print_table(r: dict) -> None:
    """Readable summary: per model the step time, images/s and the share of each part."""
    for name, m in r.items():
        print(f"\ntraining step, {name}: {m['step_s'] * 1000:.0f} ms for {m['images_per_step']} image(s), "
              f"{m['images_per_s']:.2f} images/s (one process)")
        whole = max(m["step_s"], sum(m["split_s"].values()), 1e-9)  # parts timed alone may sum past the step
        for part, s in m["split_s"].items():
            print(f"  {part:>24s}: {s * 1000:8.1f} ms  {100 * s / whole:5.1f} %")

"""``sparsefusion bench`` figure ``reconstruction``: where one scene's distillation time goes.

For a reconstruct preset (its ``FitSceneConfig`` part) and a VLDM, on synthetic inputs at the model's
image size (2 views on a ring, random pixels inside a centred disc mask: the dense sampler's cost
depends on the content only through empty-space skipping, and in the first iterations timed here
only the carved visual hull of the masks is skipped, the field's density being still above the
occupancy threshold everywhere; a real scene's input views may be larger than the model's size):

- the real loop (``distill.loop.distill``) runs in each phase: one bootstrap iteration (two
  renders, EFT targets) and one reuse cycle after it (``reuse_target`` iterations, one teacher
  call). Seconds per scene add the EFT conditioning: timed once at every fusion camera and
  scaled to the cameras the preset's draws are expected to reach (the teacher conditions a
  camera the first time it is drawn).
- each component is timed on its own at exactly the shapes one iteration uses, and multiplied
  by its uses per iteration: the field (hash encoding + MLP) replayed on the very points a render
  evaluated it at, forward, and backward where the render kept gradients; rendering (rays,
  sampling, compositing) = the same render forward+backward around a free field that hands back
  the recorded outputs (occgrid: render minus field); one UNet call × teacher steps /
  reuse_target; VAE encode + decode / reuse_target (SDS: encode forward+backward every step);
  LPIPS-VGG forward+backward; one Adam step per render. What the measured iteration has beyond
  their sum is "other" (losses, resizing, EFT bootstrap targets, the teacher's solver).

Every figure is the median of ``repeats`` rounds that each run the loop and all the parts in
turn (after a warm-up round), so a busy machine slows the loop and its parts alike.

LPIPS: without its VGG weights on the machine ``sparsefusion reconstruct`` runs without the
perceptual term, so the timed loop does too; the LPIPS network is then timed with random
weights (the cost is the same, the value is meaningless and never reported) and added to the
post-bootstrap iteration the preset describes. The JSON says which.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from dataclasses import replace
from typing import Callable

import torch
from torch import Tensor, nn

from distill.loop import DistillState, distill
from distill.photometric import make_optimizer
from distill.render import render_images
from distill.sampler import make_sampler
from pipelines.common.config import load_config, preset_path
from pipelines.common.metrics import load_lpips, lpips_weights_missing, perceptual_loss
from pipelines.tools.bench_cameras import ring_cameras
from scenes.co3d import Views
from scenes.errors import UserError

COMPONENTS = {"field": "field fwd+bwd", "rendering": "rendering", "occupancy": "occupancy update", "unet": "UNet",
              "vae": "VAE", "lpips": "LPIPS", "optimizer": "Adam step", "other": "other", "eft": "EFT conditioning"}


class _Recorder(nn.Module):
    """A field that keeps the points, outputs and gradient mode of every call it gets."""

    def __init__(self, field: nn.Module):
        super().__init__()
        self.field, self.calls = field, []

    def _keep(self, name: str, x: Tensor, out):
        outs = out if isinstance(out, tuple) else (out,)
        self.calls.append((name, x.detach(), torch.is_grad_enabled(), tuple(o.detach() for o in outs)))
        return out

    def forward(self, x: Tensor, directions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._keep("forward", x, self.field(x, directions))  # x (P, 3) -> rgb (P, 3), sigma (P,)

    def density(self, x: Tensor) -> Tensor:
        """The wrapped field's density (P,) at points (P, 3), recorded (occgrid sampling)."""
        return self._keep("density", x, self.field.density(x))


class _Playback(nn.Module):
    """A free field: hands back a recorded render's outputs in call order, so a render times the renderer alone."""

    def __init__(self, calls: list):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # render_images reads the device from the parameters
        self.outputs = [tuple(o.clone().requires_grad_(grad) for o in outs) for _, _, grad, outs in calls]
        self.i = 0

    def _next(self, n: int):
        """The next recorded outputs, cut or tiled to ``n`` points (empty-space skipping varies the count)."""
        out = self.outputs[self.i % len(self.outputs)]
        self.i += 1
        out = tuple(o if o.shape[0] == n else o.repeat(-(-n // o.shape[0]), *[1] * (o.dim() - 1))[:n] for o in out)
        return out if len(out) > 1 else out[0]

    def forward(self, x: Tensor, directions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._next(x.shape[0])

    def density(self, x: Tensor) -> Tensor:
        """The next recorded density (P,)."""
        return self._next(x.shape[0])


def _replay(field: nn.Module, calls: list) -> None:
    """Evaluate the field on recorded points; backward (of the outputs' sum) where the render had gradients."""
    for name, x, grad, _ in calls:
        with torch.set_grad_enabled(grad):
            out = getattr(field, name)(x)
            if grad:
                sum(o.float().sum() for o in (out if isinstance(out, tuple) else (out,))).backward()


def _render_fwd_bwd(field: nn.Module, cameras, sampler) -> None:
    """One training render as the loop makes it (stratified, gradients), then its backward."""
    rgb, _, opacity = render_images(field, cameras, sampler, stratified=True)  # (B, 3, h, w), (B, 1, h, w)
    (rgb.float().sum() + opacity.float().sum()).backward()


def _loop(fld, views: Views, cams, teacher, dcfg, opt, sampler, perceptual, start: int, n: int) -> None:
    """``n`` iterations of the real distillation loop from iteration ``start`` (a fresh state: no cached target)."""
    distill(fld, views, cams, teacher, replace(dcfg, iters=start + n), perceptual, state=DistillState(iteration=start),
            optimizer=opt, sampler=sampler, progress=False)


def _interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None]) -> dict:
    """Median seconds of each callable over ``repeats`` rounds that run them all in turn, after a warm-up round.

    Unlike one ``median_seconds`` after another, every figure (the loop and its parts) is timed in
    the same stretch of time, so other work on a shared machine slows them alike.
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats + 1):
        for k, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if r:
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _split(seconds: dict[str, float], measured: float, lpips_outside: float) -> dict:
    """Component seconds + 'other' (the measured rest) and shares of the total, for one iteration or scene."""
    total = measured + lpips_outside
    known = sum(seconds.values())
    out = {**seconds, "other": max(0.0, total - known)}
    total = max(total, known)
    return {"measured_s": measured, "total_s": total, "seconds": out,
            "share": {k: v / total if total > 0 else 0.0 for k, v in out.items()}}


def _scene_split(seconds: dict[str, float]) -> dict:
    """Seconds of one scene per component (they add up to the projected scene) and their shares."""
    total = sum(seconds.values())
    return {"measured_s": total, "total_s": total, "seconds": seconds,
            "share": {k: v / total if total > 0 else 0.0 for k, v in seconds.items()}}


def measure(pipe, preset: str, device: torch.device, repeats: int) -> dict:
    """The ``reconstruction`` figure for one preset (see the module docstring)."""
    from pipelines.reconstruction.fit import fusion_cameras
    from pipelines.reconstruction.reconstruct import ReconstructConfig
    from vldm.autoencoder import decode, encode
    from vldm.teacher import VLDMTeacher

    # any reconstruct preset or YAML loads (only its FitSceneConfig part is used)
    cfg = load_config(ReconstructConfig, preset_path("reconstruct", preset))
    if cfg.mode not in ("sparsefusion", "sds"):
        raise UserError(f"figure reconstruction times the distillation modes; preset {preset!r} is {cfg.mode}")
    d = replace(cfg.distill, mode="sds" if cfg.mode == "sds" else "multistep")
    multistep = d.mode == "multistep"
    size, views_n, B = pipe.image_size, 2, d.views_per_step
    cams = ring_cameras(views_n, size, device)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(views_n, 3, size, size, generator=g).to(device)  # (V, 3, H, W)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = ((yy + 0.5 - size / 2) ** 2 + (xx + 0.5 - size / 2) ** 2 < (0.3 * size) ** 2).float()
    masks = disc.expand(views_n, 1, size, size).contiguous().to(device)  # (V, 1, H, W): an object's silhouette
    views = Views(images, masks, torch.ones_like(masks), cams, list(range(views_n)), [""] * views_n)
    torch.manual_seed(0)
    fld = cfg.field.build().to(device)
    opt = make_optimizer(fld, d)
    sampler = make_sampler(d.sampler, device)
    teacher = VLDMTeacher(pipe, images, cams, cfg.teacher.steps, cfg.teacher.guidance_scale, cfg.teacher.solver,
                          cfg.teacher.steps_per_t)
    per_target = teacher.expected_unet_calls(d.t_min, d.t_max) / (1 if cfg.teacher.guidance_scale == 1.0 else 2)
    fcams = fusion_cameras(cams, None, cfg.circle_views).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    teacher.prepare(fcams)
    teacher.conditioning(torch.arange(len(fcams)))  # the EFT at every camera: one run
    sync()
    eft_all_s = time.perf_counter() - t0
    n_boot_, cycle_ = min(d.bootstrap_iters, d.iters), max(1, d.reuse_target) if multistep else 1
    draws = n_boot_ + math.ceil((d.iters - n_boot_) / cycle_)  # batches of B distinct cameras drawn
    reached = len(fcams) * (1 - (1 - min(B, len(fcams)) / len(fcams)) ** draws)  # expected distinct cameras
    prepare_s = eft_all_s * reached / len(fcams)

    uses_lpips = cfg.mode == "sparsefusion" and cfg.perceptual and d.perceptual_weight > 0
    missing = lpips_weights_missing("vgg")
    in_loop = perceptual_loss("vgg", device)[0] if uses_lpips and not missing else None
    bf16 = d.bf16 and device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def timed(fn: Callable[[], object], grad: bool = True) -> Callable[[], None]:
        def run() -> None:
            with autocast(), torch.set_grad_enabled(grad):
                fn()
        return run

    n_boot = min(d.bootstrap_iters, d.iters)
    n_post = d.iters - n_boot
    cycle = max(1, d.reuse_target) if multistep else 1  # iterations per teacher call
    fns: dict[str, Callable[[], object]] = {}
    sampler.prepare(views)  # the input masks' hull, once, as fit_scene does, before any render is recorded
    if n_boot:  # iteration 1, not 0: the occupancy update (every update_every iterations) is timed on its own
        first = min(1, n_boot - 1)
        fns["loop_bootstrap"] = lambda: _loop(fld, views, fcams, teacher, d, opt, sampler, in_loop, first, 1)
    if n_post:
        fns["loop_distill"] = lambda: _loop(fld, views, fcams, teacher, d, opt, sampler, in_loop, n_boot, cycle)
    # the parts, at one iteration's shapes: renders of 1 (input) and B (fusion) views
    points = {}
    for n in sorted({1, B}):
        small = fcams[list(range(n))]
        small = small.scaled(d.render_scale) if d.render_scale != 1 else small
        rec = _Recorder(fld)
        timed(lambda: _render_fwd_bwd(rec, small, sampler))()
        fns[f"render_{n}"] = timed(lambda small=small: _render_fwd_bwd(fld, small, sampler))
        fns[f"field_{n}"] = timed(lambda calls=rec.calls: _replay(fld, calls))
        # dense renders evaluate the same number of samples every time: time the renderer around a
        # free field; occgrid's vary, so there rendering is the render minus the field
        if sampler.name == "dense":
            free = _Playback(rec.calls).to(device)
            fns[f"rendering_{n}"] = timed(lambda small=small, free=free: _render_fwd_bwd(free, small, sampler))
        points[n] = {"rays": n * small.height * small.width,
                     "field_points_no_grad": sum(len(c[1]) for c in rec.calls if not c[2]),
                     "field_points_fwd_bwd": sum(len(c[1]) for c in rec.calls if c[2])}
    fns["adam"] = opt.step
    fns["occupancy"] = timed(lambda: sampler.update(fld, 0), grad=False)  # step 0: always an update
    gw = 1 if cfg.teacher.guidance_scale == 1.0 else 2  # guidance doubles the UNet batch
    renders = torch.rand(B, 3, size, size, device=device)  # (B, 3, H, W) renders upsampled to the image size
    leaf = renders.clone().requires_grad_(True)
    with torch.no_grad(), autocast():
        z = encode(pipe.vae, renders)  # (B, c, h, w)
        x_in = torch.cat([z, teacher.conditioning(torch.arange(B))[0].to(z.dtype)], 1).repeat(gw, 1, 1, 1)  # (g·B, c + C, h, w)
    t = torch.full((gw * B,), 500, device=device)
    fns["unet"] = timed(lambda: pipe.unet(x_in, t), grad=False)
    if multistep:
        fns["vae_encode"] = timed(lambda: encode(pipe.vae, renders), grad=False)
        fns["vae_decode"] = timed(lambda: decode(pipe.vae, z), grad=False)
    else:  # SDS back-propagates through the encoder every fusion step
        fns["vae_encode"] = timed(lambda: encode(pipe.vae, leaf).float().sum().backward())
    if uses_lpips:  # the loop's LPIPS, or the same network with random weights (timing only)
        net = None if in_loop else load_lpips("vgg", device, random_backbone=True)
        lp = in_loop or (lambda a, b: net(a, b, normalize=True).flatten())
        fns["lpips"] = timed(lambda: lp(leaf, renders).float().sum().backward())
    unet0 = teacher.unet_evaluations
    m = _interleaved_medians(fns, repeats, sync)
    opt.zero_grad(set_to_none=True)
    boot_s = m.get("loop_bootstrap", 0.0)
    post_s = m.get("loop_distill", 0.0) / cycle
    field_s = {n: m[f"field_{n}"] for n in points}
    rendering_s = {n: m.get(f"rendering_{n}", max(0.0, m[f"render_{n}"] - m[f"field_{n}"])) for n in points}
    unet_s, enc_s, dec_s, lpips_s = m["unet"], m["vae_encode"], m.get("vae_decode", 0.0), m.get("lpips", 0.0)
    adam_s = m["adam"]
    occupancy_s = m["occupancy"] / max(1, d.sampler.update_every)  # amortised over the iterations between updates
    boot_s, post_s = (s + occupancy_s if s else 0.0 for s in (boot_s, post_s))  # the timed iterations held no update

    boot = {"field": field_s[1] + field_s[B], "rendering": rendering_s[1] + rendering_s[B], "occupancy": occupancy_s,
            "unet": 0.0, "vae": 0.0, "lpips": 0.0, "optimizer": 2 * adam_s}
    post = {**boot, "unet": (per_target if multistep else 1) * unet_s / cycle,
            "vae": (enc_s + dec_s) / cycle, "lpips": lpips_s}
    lpips_outside = lpips_s if in_loop is None else 0.0
    split = {"bootstrap": _split(boot, boot_s, 0.0), "distill": _split(post, post_s, lpips_outside)}
    scene = {k: n_boot * split["bootstrap"]["seconds"][k] + n_post * split["distill"]["seconds"][k]
             for k in split["distill"]["seconds"]}
    scene["eft"] = prepare_s
    split["scene"] = _scene_split(scene)
    shares = split["scene"]["share"]
    top = max(shares, key=shares.get)
    targets = math.ceil(n_post / cycle) if multistep else n_post
    calls = round((per_target if multistep else 1) * B * gw)
    return {
        "preset": preset, "mode": cfg.mode, "iterations": d.iters, "bootstrap_iterations": n_boot,
        "image_size": size, "render_scale": d.render_scale, "sampler": sampler.name,
        "samples_per_ray": {"coarse": d.sampler.n_coarse, "fine": d.sampler.n_fine},
        "teacher": {"steps": cfg.teacher.steps, "solver": cfg.teacher.solver, "reuse_target": d.reuse_target,
                    "views_per_step": B, "guidance_scale": cfg.teacher.guidance_scale},
        "fusion_cameras": len(fcams), "render_points": points,
        "eft_prepare_s": prepare_s, "eft_all_cameras_s": eft_all_s, "eft_cameras_expected": reached,
        "s_per_iteration": {"bootstrap": boot_s, "distill": post_s},
        "s_per_scene": prepare_s + n_boot * boot_s + n_post * post_s,
        "s_per_scene_with_lpips": prepare_s + n_boot * boot_s + n_post * (post_s + lpips_outside),
        "unet_evaluations_per_scene": round(targets * (per_target if multistep else 1) * B * gw),
        "unet_evaluations_counted_in_timed_runs": teacher.unet_evaluations - unet0,
        "unet_evaluations_expected_in_timed_runs": (repeats + 1) * calls if n_post else 0,
        "vae_calls_per_scene": {"encode": targets, "decode": targets if multistep else 0, "images_per_call": B},
        # a render's field points per second: the coarse ones forward only, the fine ones forward+backward
        "field_points_per_s_as_rendered": sum(v for k, v in points[1].items() if k != "rays") / field_s[1],
        "rendered_rays_per_s_fwd_bwd": points[1]["rays"] / m["render_1"],
        "per_use_s": {"render_fwd_bwd": m["render_1"], "field": field_s[1], "rendering": rendering_s[1],
                      "unet_call": unet_s, "vae_encode": enc_s, "vae_decode": dec_s, "lpips_fwd_bwd": lpips_s,
                      "adam_step": adam_s},
        "lpips": {"used_by_preset": uses_lpips, "in_timed_loop": in_loop is not None,
                  "weights": "VGG (ImageNet)" if not missing else
                  "random (VGG weights missing here): timing only, the value is not LPIPS and is never reported",
                  "note": (missing + "; sparsefusion reconstruct runs without the perceptual term here, so the "
                           "timed loop does too; s_per_scene_with_lpips and the split add its timed cost")
                  if missing and uses_lpips else ""},
        "split": split,
        "largest": f"{COMPONENTS[top]} {shares[top]:.0%}",
    }


def print_table(r: dict) -> None:
    """Readable summary: seconds per iteration and per scene, then the split with shares of a scene."""
    s = r["split"]
    print(f"\nreconstruction, preset {r['preset']} ({r['mode']}, {r['iterations']} iterations, "
          f"{r['bootstrap_iterations']} bootstrap; {r['image_size']}² at render scale {r['render_scale']}, "
          f"{r['sampler']} {r['samples_per_ray']['coarse']}+{r['samples_per_ray']['fine']} samples/ray)")
    print(f"  measured s/iteration: bootstrap {r['s_per_iteration']['bootstrap']:.3f}, "
          f"after {r['s_per_iteration']['distill']:.3f}; EFT {r['eft_all_cameras_s']:.2f} s at all "
          f"{r['fusion_cameras']} cameras, {r['eft_prepare_s']:.2f} s at the {r['eft_cameras_expected']:.0f} "
          "expected to be drawn")
    print(f"  projected s/scene: {r['s_per_scene']:.1f}"
          + (f" ({r['s_per_scene_with_lpips']:.1f} with LPIPS)" if r["lpips"]["used_by_preset"]
             and not r["lpips"]["in_timed_loop"] else ""))
    vae = r["vae_calls_per_scene"]
    print(f"  per scene: {r['unet_evaluations_per_scene']} UNet evaluations, VAE {vae['encode']} encode + "
          f"{vae['decode']} decode calls of {vae['images_per_call']} image(s)")
    if r["lpips"]["used_by_preset"] and not r["lpips"]["in_timed_loop"]:
        print("  LPIPS: no VGG weights here, so reconstruct (and the timed loop) runs without it; its row is the "
              "network timed with random weights (timing only, not an LPIPS value), added on top")
    print(f"  {'component':<20s}{'bootstrap s/it':>15s}{'after s/it':>12s}{'scene s':>10s}{'share':>8s}")
    for k, name in COMPONENTS.items():
        b, p = s["bootstrap"]["seconds"].get(k, 0.0), s["distill"]["seconds"].get(k, 0.0)
        print(f"  {name:<20s}{b:>15.3f}{p:>12.3f}{s['scene']['seconds'][k]:>10.1f}{s['scene']['share'][k]:>8.0%}")
    print(f"  {'total':<20s}{s['bootstrap']['total_s']:>15.3f}{s['distill']['total_s']:>12.3f}"
          f"{s['scene']['total_s']:>10.1f}{1:>8.0%}")
    print(f"  largest: {r['largest']}")

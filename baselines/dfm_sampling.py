"""Sampling 3D scenes with DFM: DDIM over renders, one-shot or autoregressive.

Every DDIM step renders the full target image from the field conditioned on the contexts and
the current noisy target; that render is x̂0 (with guidance, the guided combination, then
thresholded as the official sampler does). The sampled 3D scene is the field of the last step
(:attr:`DFMSample.scene`), which renders any camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from scenes.cameras import Cameras, resize_views

from .dfm import DFM
from .pixel_field import ViewFeatures

GREY = 0.5  # what a dropped context is filled with: 0 in the model's [-1, 1] range (official: ctxt_rgb * 0)
THRESHOLD_PERCENTILE = 0.95


@dataclass
class DFMSample:
    """One sample: the denoised target view and the 3D scene it came from."""

    image: Tensor  # (1, 3, H, W) in [0, 1]: the last step's render at the target camera
    scene: ViewFeatures  # contexts + the last noisy target: condition the field on it to render any camera
    renders: int  # full-image renders of the field spent on this sample
    opacity: Tensor | None = None  # (1, 1, H, W): the last step's (conditional) opacity at the target


def threshold_x0(x0: Tensor) -> Tensor:
    """The official dynamic thresholding of x̂0 (N, 3, H, W) in [-1, 1]: clamp to ±s and divide by s.

    s is the 95th percentile of |x̂0| per image, at least 1; a render without guidance lies in
    [-1, 1] already (s = 1: a plain clamp), a guided one may not.
    """
    s = torch.quantile(x0.flatten(1).abs().float(), THRESHOLD_PERCENTILE, dim=1).clamp_min(1.0).to(x0)
    s = s[:, None, None, None]
    return torch.maximum(torch.minimum(x0, s), -s) / s


@torch.no_grad()
def sample_oneshot(model: DFM, images: Tensor, cameras: Cameras, target: Cameras, steps: int = 50,
                   generator: torch.Generator | None = None, temperature: float = 1.0,
                   guidance_scale: float = 1.0) -> DFMSample:
    """Sample the target view (1 camera) given context views (V, 3, H, W) in [0, 1].

    Inputs are resized to the model's image size; the target is sampled at that size.
    ``guidance_scale`` != 1 adds a pass with grey contexts: x̂0 = x̂0_u + s·(x̂0_c − x̂0_u), then
    thresholded (for models trained with conditioning dropout). ``generator`` seeds the initial
    noise and the renderer's importance samples.
    """
    size = model.config.image_size
    images, cameras = resize_views(images.to(model.device, model.dtype), cameras, size)
    target = target.resize(size, size).to(model.device, model.dtype)
    passes = [images] + ([torch.full_like(images, GREY)] if guidance_scale != 1.0 else [])
    contexts = [model.encode_contexts(im, cameras) for im in passes]
    conds = [model.condition(c, target) for c in contexts]
    sched = model.scheduler
    sched.set_timesteps(steps)
    x = torch.randn((1, 3, size, size), generator=generator, device=model.device, dtype=model.dtype) * temperature
    x0, scene, opacity, renders = None, None, None, 0
    for t in sched.timesteps:
        t1 = t.reshape(1).to(model.device)
        outs = []
        for k, (ctx, cond) in enumerate(zip(contexts, conds)):
            scene_k = ViewFeatures.cat([ctx, model.encode_target(x, t1, target, cond)])
            out = model.render_scene_images(scene_k, target, generator)
            outs.append(out.rgb * 2 - 1)
            renders += 1
            if k == 0:  # the conditional pass's field is the sample's scene
                scene, opacity = scene_k, out.opacity
        x0 = threshold_x0(outs[0] if len(outs) == 1 else outs[1] + guidance_scale * (outs[0] - outs[1]))
        x = sched.step(x0, t, x).prev_sample
    return DFMSample((x0 + 1) / 2, scene, renders, opacity)


@torch.no_grad()
def sample_autoregressive(model: DFM, images: Tensor, cameras: Cameras, path: Cameras, steps: int = 50,
                          generator: torch.Generator | None = None, temperature: float = 1.0,
                          guidance_scale: float = 1.0, opacities: list | None = None) -> tuple[Tensor, DFMSample]:
    """Sample the cameras of ``path`` one after the other, each generated view joining the contexts.

    Returns the generated views (P, 3, H, W) at the model's size and the last sample (its scene
    holds every context and generated view). ``opacities``, when given, receives each generated
    view's mean rendered opacity in path order (does the scene keep its object?).
    """
    size = model.config.image_size
    images, cameras = resize_views(images.to(model.device, model.dtype), cameras, size)
    generated, last = [], None
    for i in range(len(path)):
        last = sample_oneshot(model, images, cameras, path[[i]], steps, generator, temperature, guidance_scale)
        generated.append(last.image)
        if opacities is not None:
            opacities.append(float(last.opacity.mean()))
        images = torch.cat([images, last.image])
        cameras = Cameras.cat([cameras, path[[i]].resize(size, size).to(cameras.device, cameras.R.dtype)])
    return torch.cat(generated), last

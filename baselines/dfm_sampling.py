"""Sampling 3D scenes with DFM: DDIM over renders, one-shot or autoregressive.

Every DDIM step renders the full target image from the field conditioned on the contexts and
the current noisy target; that render is x̂0. The sampled 3D scene is the field of the last
step (:attr:`DFMSample.scene`), which renders any camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from scenes.cameras import Cameras, resize_views

from .dfm import DFM
from .pixel_field import ViewFeatures


@dataclass
class DFMSample:
    """One sample: the denoised target view and the 3D scene it came from."""

    image: Tensor  # (1, 3, H, W) in [0, 1]: the last step's render at the target camera
    scene: ViewFeatures  # contexts + the last noisy target: condition the field on it to render any camera
    renders: int  # full-image renders of the field spent on this sample


@torch.no_grad()
def sample_oneshot(model: DFM, images: Tensor, cameras: Cameras, target: Cameras, steps: int = 50,
                   generator: torch.Generator | None = None, temperature: float = 1.0,
                   guidance_scale: float = 1.0) -> DFMSample:
    """Sample the target view (1 camera) given context views (V, 3, H, W) in [0, 1].

    Inputs are resized to the model's image size; the target is sampled at that size.
    ``guidance_scale`` != 1 adds a pass with the contexts zeroed: x̂0 = x̂0_u + s·(x̂0_c − x̂0_u)
    (for models trained with conditioning dropout).
    """
    size = model.config.image_size
    images, cameras = resize_views(images.to(model.device, model.dtype), cameras, size)
    target = target.resize(size, size).to(model.device, model.dtype)
    passes = [images] + ([torch.zeros_like(images)] if guidance_scale != 1.0 else [])
    contexts = [model.encode_contexts(im, cameras) for im in passes]
    conds = [model.condition(c, target) for c in contexts]
    sched = model.scheduler
    sched.set_timesteps(steps)
    x = torch.randn((1, 3, size, size), generator=generator, device=model.device, dtype=model.dtype) * temperature
    x0, scene, renders = None, None, 0
    for t in sched.timesteps:
        t1 = t.reshape(1).to(model.device)
        outs = []
        for k, (ctx, cond) in enumerate(zip(contexts, conds)):
            scene_k = ViewFeatures.cat([ctx, model.encode_target(x, t1, target, cond)])
            outs.append(model.render_scene(scene_k, target))
            renders += 1
            if k == 0:  # the conditional pass's field is the sample's scene
                scene = scene_k
        x0 = outs[0] if len(outs) == 1 else outs[1] + guidance_scale * (outs[0] - outs[1])
        x = sched.step(x0 * 2 - 1, t, x).prev_sample
    return DFMSample(x0.clamp(0, 1), scene, renders)


@torch.no_grad()
def sample_autoregressive(model: DFM, images: Tensor, cameras: Cameras, path: Cameras, steps: int = 50,
                          generator: torch.Generator | None = None, temperature: float = 1.0
                          ) -> tuple[Tensor, DFMSample]:
    """Sample the cameras of ``path`` one after the other, each generated view joining the contexts.

    Returns the generated views (P, 3, H, W) at the model's size and the last sample (its scene
    holds every context and generated view).
    """
    size = model.config.image_size
    images, cameras = resize_views(images.to(model.device, model.dtype), cameras, size)
    generated, last = [], None
    for i in range(len(path)):
        last = sample_oneshot(model, images, cameras, path[[i]], steps, generator, temperature)
        generated.append(last.image)
        images = torch.cat([images, last.image])
        cameras = Cameras.cat([cameras, path[[i]].resize(size, size).to(cameras.device, cameras.R.dtype)])
    return torch.cat(generated), last

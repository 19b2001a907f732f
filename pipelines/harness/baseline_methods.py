"""The baselines in the evaluation harness: ``pixelnerf`` (deterministic) and ``dfm`` (one sample).

``dfm`` samples one target view with DDIM (the target least seen by the inputs: the one whose
viewing direction is farthest from every input's), then renders every target camera from the
field of the last denoising step, the sampled 3D scene, at the model's image size. Both return
the rendered opacity at the targets (for the silhouette IoU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pipelines.harness.method_api import MethodContext, Prediction, SceneMethod, at_target_size, register
from scenes.cameras import Cameras
from scenes.co3d import Views


def least_seen(inputs: Cameras, targets: Cameras) -> int:
    """Index of the target whose viewing direction is farthest from every input's."""
    sim = targets.forward.to(inputs.R) @ inputs.forward.T  # (T, V)
    return int(sim.max(dim=1).values.argmin())


class PixelNeRFMethod(SceneMethod):
    """pixelNeRF rendered at every target camera (inputs resized to the model's size)."""

    name = "pixelnerf"

    def __init__(self, context: MethodContext, model=None):
        from baselines.load import load_pixelnerf

        self.model = model if model is not None else load_pixelnerf(context.checkpoint, context.device)
        self.device = context.device

    @torch.no_grad()
    def predict(self, inputs: Views, targets: Cameras) -> Prediction:
        self.last_inputs = inputs
        rgb, opacity = self._render(targets)
        return Prediction(rgb, opacity, {"field_renders": len(targets)})

    def _render(self, cameras: Cameras) -> tuple[Tensor, Tensor]:
        images = self.last_inputs.images.to(self.device)
        out = self.model.render_images(images, self.last_inputs.cameras.to(self.device), cameras.to(self.device))
        return at_target_size(out.rgb.float(), cameras), at_target_size(out.opacity.float(), cameras)

    @torch.no_grad()
    def render_scene(self, cameras: Cameras) -> Tensor:
        """Images (N, 3, H, W) at any cameras, conditioned on the last scene's inputs."""
        return self._render(cameras)[0]


class DFMMethod(SceneMethod):
    """One DFM sample (DDIM, ``steps``) of the least-seen target, then the sampled scene at every target."""

    name = "dfm"

    def __init__(self, context: MethodContext, model=None, steps: int = 50):
        from baselines.load import load_dfm

        self.model = model if model is not None else load_dfm(context.checkpoint, context.device)
        self.device, self.seed, self.steps = context.device, context.seed, steps

    @torch.no_grad()
    def predict(self, inputs: Views, targets: Cameras) -> Prediction:
        from baselines.dfm_sampling import sample_oneshot

        k = least_seen(inputs.cameras, targets)
        g = torch.Generator(self.device).manual_seed(self.seed)
        sample = sample_oneshot(self.model, inputs.images, inputs.cameras.to(self.device), targets[[k]], self.steps, g)
        self.last_scene = sample.scene
        pred, opacity = self._render(targets, g)
        return Prediction(pred, opacity, {"field_renders": sample.renders + len(targets), "denoised_target": k})

    def _render(self, cameras: Cameras, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        s = self.model.config.image_size
        out = self.model.render_scene_images(self.last_scene, cameras.to(self.device).resize(s, s), generator)
        return at_target_size(out.rgb.float(), cameras), at_target_size(out.opacity.float(), cameras)

    @torch.no_grad()
    def render_scene(self, cameras: Cameras) -> Tensor:
        """Images (N, 3, H, W) of the last sampled 3D scene at any cameras (rendered at the model's size)."""
        return self._render(cameras)[0]


@dataclass(frozen=True)
class DFMOptions:
    """How ``dfm`` samples (``evaluate --method dfm options.steps=25``)."""

    steps: int = 50
    """DDIM steps of the one sample."""


@register("pixelnerf")
def _pixelnerf(context: MethodContext) -> PixelNeRFMethod:
    return PixelNeRFMethod(context)


@register("dfm", options=DFMOptions())
def _dfm(context: MethodContext) -> DFMMethod:
    return DFMMethod(context, **context.options)

"""SparseFusion in the evaluation harness: ``sparsefusion``, ``-fast``, ``-sds`` and ``-paper``.

Each fits a field per scene from the input views with the shipped demo VLDM (or
``--checkpoint``) as teacher, using the reconstruct preset of the same name (``demo``, ``fast``,
``sds``, ``paper`` under configs/reconstruct/), then renders it at the target cameras.
``sparsefusion-paper`` is the published recipe, the reference the faster presets are measured
against (≈ 76,000 UNet evaluations per scene: meant for a GPU). Each prediction carries the scene's
UNet evaluations and the field's opacity at the targets (the silhouette IoU).
"""

from __future__ import annotations

import torch
from torch import Tensor

from distill.render import render_views
from pipelines.common.config import load_config, preset_path
from pipelines.harness.method_api import MethodContext, Prediction, SceneMethod, register
from scenes.cameras import Cameras
from scenes.co3d import Views

PRESETS = {"sparsefusion": "demo", "sparsefusion-fast": "fast", "sparsefusion-sds": "sds",
           "sparsefusion-paper": "paper"}


class SparseFusionMethod(SceneMethod):
    """Distil a field from the inputs (fusion cameras include the targets), render the targets."""

    def __init__(self, name: str, context: MethodContext, pipe=None):
        from pipelines.reconstruction.fit import FitSceneConfig
        from pipelines.reconstruction.reconstruct import training_perceptual
        from vldm.load import load_vldm

        self.name, self.context = name, context
        self.cfg = load_config(FitSceneConfig, preset_path("reconstruct", PRESETS[name]))
        self.pipe = pipe if pipe is not None else load_vldm(context.checkpoint, context.device)
        self.perceptual = training_perceptual(self.cfg, context.device)

    def predict(self, inputs: Views, targets: Cameras) -> Prediction:
        from pipelines.reconstruction.fit import fit_scene

        with torch.enable_grad():
            fit = fit_scene(inputs, targets, self.cfg, self.context.device, self.pipe, self.perceptual,
                            seed=self.context.seed, progress=False)
        self.last_fit = fit
        rgb, _, opacity = render_views(fit.field, targets, fit.sampler)
        return Prediction(rgb.clamp(0, 1), opacity.clamp(0, 1),
                          {"unet_evaluations": fit.unet_evaluations, "iterations": fit.iterations})

    def render_scene(self, cameras: Cameras) -> Tensor:
        """Images (N, 3, H, W) of the last fitted field at any cameras."""
        rgb, _, _ = render_views(self.last_fit.field, cameras, self.last_fit.sampler)
        return rgb.clamp(0, 1)


def _factory(name: str):
    def make(context: MethodContext) -> SparseFusionMethod:
        return SparseFusionMethod(name, context)

    return make


for _name in PRESETS:
    register(_name)(_factory(_name))

"""Stage-1 methods in the evaluation harness: ``eft`` (the EFT's RGB head) and ``vldm`` (one sample per target).

``vldm`` draws each sample with 25 deterministic DDIM steps (the fast default); ``vldm-paper``
with the official solver of the paper's VLDM-only row: 500 ancestral DDPM steps with x̂0
clipped to ±10 (500 UNet evaluations per target view).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pipelines.harness.method_api import MethodContext, Prediction, at_target_size, register
from scenes.cameras import Cameras
from scenes.co3d import Views


class _VLDMMethod:
    """Shared loading and resolution handling: inputs are resized to the model's image size."""

    name = "vldm"

    def __init__(self, context: MethodContext, steps: int = 25, solver: str = "ddim", guidance: float = 1.0,
                 pipe=None, clip_x0: float | None = None):
        from vldm.load import load_vldm

        self.pipe = pipe if pipe is not None else load_vldm(context.checkpoint, context.device)
        self.device = context.device
        self.seed = context.seed
        self.steps, self.solver, self.guidance, self.clip_x0 = steps, solver, guidance, clip_x0

    def _model_inputs(self, inputs: Views, targets: Cameras) -> tuple[Tensor, Cameras, Cameras]:
        images, cameras = self.pipe.at_image_size(inputs.images, inputs.cameras)
        s = self.pipe.image_size
        return images.to(self.device), cameras, targets.resize(s, s)


class EFTMethod(_VLDMMethod):
    """The EFT's RGB head at the latent resolution, upsampled bilinearly (deterministic)."""

    name = "eft"

    @torch.no_grad()
    def predict(self, inputs: Views, targets: Cameras) -> Prediction:
        images, ctx, tgt = self._model_inputs(inputs, targets)
        _, rgb = self.pipe.condition(images, ctx, tgt)
        return Prediction(at_target_size(rgb.float(), targets), stats={"unet_evaluations": 0})


class VLDMSampleMethod(_VLDMMethod):
    """One sample per target view, conditioned on the inputs (not 3D-consistent)."""

    name = "vldm"

    @torch.no_grad()
    def predict(self, inputs: Views, targets: Cameras) -> Prediction:
        images, ctx, tgt = self._model_inputs(inputs, targets)
        g = torch.Generator(self.device).manual_seed(self.seed)
        out = self.pipe(images, ctx, tgt, num_inference_steps=self.steps, solver=self.solver,
                        guidance_scale=self.guidance, generator=g,
                        **({} if self.clip_x0 is None else {"clip_x0": self.clip_x0}))  # None: the pipeline's default
        evaluations = self.steps * len(targets) * (1 if self.guidance == 1.0 else 2)
        return Prediction(at_target_size(out.images, targets), stats={"unet_evaluations": evaluations})


@dataclass(frozen=True)
class SamplingOptions:
    """How ``vldm`` draws its samples (``evaluate --method vldm options.steps=50``)."""

    steps: int = 25
    """Solver steps per sample."""
    solver: str = "ddim"
    """Diffusion solver: ddim, plms, dpm or ddpm (ancestral)."""
    guidance: float = 1.0
    """Classifier-free guidance scale (1: none)."""
    clip_x0: float | None = None
    """Clip x̂0 to ±this (null: the pipeline's default)."""


VLDM_PAPER = SamplingOptions(steps=500, solver="ddpm", clip_x0=10.0)  # the paper's VLDM-only row


@register("eft")
def _eft(context: MethodContext) -> EFTMethod:
    return EFTMethod(context)


@register("vldm", options=SamplingOptions())
def _vldm(context: MethodContext) -> VLDMSampleMethod:
    return VLDMSampleMethod(context, **context.options)


@register("vldm-paper", options=VLDM_PAPER)
def _vldm_paper(context: MethodContext) -> VLDMSampleMethod:
    method = VLDMSampleMethod(context, **context.options)
    method.name = "vldm-paper"
    return method

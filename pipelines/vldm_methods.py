"""Stage-1 methods in the evaluation harness: ``eft`` (the EFT's RGB head) and ``vldm`` (one sample per target)."""

from __future__ import annotations

import torch
from torch import Tensor

from scenes.cameras import Cameras
from scenes.co3d import Views

from .methods import MethodContext, at_target_size, register


class _VLDMMethod:
    """Shared loading and resolution handling: inputs are resized to the model's image size."""

    name = "vldm"

    def __init__(self, context: MethodContext, steps: int = 25, sampler: str = "ddim", guidance: float = 1.0,
                 pipe=None):
        from vldm.load import load_vldm

        self.pipe = pipe if pipe is not None else load_vldm(context.checkpoint, context.device)
        self.device = context.device
        self.seed = context.seed
        self.steps, self.sampler, self.guidance = steps, sampler, guidance

    def _model_inputs(self, inputs: Views, targets: Cameras) -> tuple[Tensor, Cameras, Cameras]:
        images, cameras = self.pipe.at_image_size(inputs.images, inputs.cameras)
        s = self.pipe.image_size
        return images.to(self.device), cameras, targets.resize(s, s)


class EFTMethod(_VLDMMethod):
    """The EFT's RGB head at the latent resolution, upsampled bilinearly (deterministic)."""

    name = "eft"

    @torch.no_grad()
    def predict(self, inputs: Views, targets: Cameras) -> Tensor:
        images, ctx, tgt = self._model_inputs(inputs, targets)
        _, rgb = self.pipe.condition(images, ctx, tgt)
        self.last_stats = {"unet_evaluations": 0}
        return at_target_size(rgb.float(), targets)


class VLDMSampleMethod(_VLDMMethod):
    """One DDIM sample per target view, conditioned on the inputs (not 3D-consistent)."""

    name = "vldm"

    @torch.no_grad()
    def predict(self, inputs: Views, targets: Cameras) -> Tensor:
        images, ctx, tgt = self._model_inputs(inputs, targets)
        g = torch.Generator(self.device).manual_seed(self.seed)
        out = self.pipe(images, ctx, tgt, num_inference_steps=self.steps, sampler=self.sampler,
                        guidance_scale=self.guidance, generator=g)
        self.last_stats = {"unet_evaluations": self.steps * len(targets) * (1 if self.guidance == 1.0 else 2)}
        return at_target_size(out.images, targets)


@register("eft")
def _eft(context: MethodContext) -> EFTMethod:
    return EFTMethod(context)


@register("vldm")
def _vldm(context: MethodContext) -> VLDMSampleMethod:
    return VLDMSampleMethod(context)

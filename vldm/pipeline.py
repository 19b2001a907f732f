"""The whole of stage 1 as one diffusers pipeline: ``eft``, ``vae``, ``unet``, ``scheduler``.

``VLDMPipeline.save_pretrained(folder)`` writes one folder holding a trained VLDM;
``VLDMPipeline.from_pretrained(folder)`` loads it back (safetensors, no code execution).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DModel
from torch import Tensor

from scenes.cameras import Cameras, resize_views

from .autoencoder import decode
from .diffusion import SAMPLE_CLIP_X0, sample_latents, solver_from
from .eft import EpipolarFeatureTransformer


@dataclass
class VLDMOutput:
    """Samples at the query cameras."""

    images: Tensor  # (Q, 3, H, W) in [0, 1]
    eft_rgb: Tensor  # (Q, 3, H, W) the EFT's RGB, upsampled
    latents: Tensor  # (Q, c, h, w)


class VLDMPipeline(DiffusionPipeline):
    """View-conditioned latent diffusion: EFT features at the query camera condition a UNet."""

    def __init__(self, eft: EpipolarFeatureTransformer, vae: AutoencoderKL, unet: UNet2DModel, scheduler):
        super().__init__()
        self.register_modules(eft=eft, vae=vae, unet=unet, scheduler=scheduler)

    @property
    def vae_factor(self) -> int:
        """Image-to-latent downsampling of the VAE."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def image_size(self) -> int:
        """Square image side the model was trained at (UNet sample size × VAE factor)."""
        return self.unet.config.sample_size * self.vae_factor

    def at_image_size(self, images: Tensor, cameras: Cameras) -> tuple[Tensor, Cameras]:
        """Images (N, 3, H, W) resized (antialiased) and their cameras rescaled to the model's size."""
        return resize_views(images, cameras, self.image_size)

    def latent_size(self, cameras: Cameras) -> tuple[int, int]:
        """(h, w) of the latents for images of these cameras."""
        f = self.vae_factor
        if cameras.height % f or cameras.width % f:
            raise ValueError(f"image size {cameras.height}x{cameras.width} is not divisible by the VAE factor {f}")
        return cameras.height // f, cameras.width // f

    def condition(self, context_images: Tensor, context_cameras: Cameras, query_cameras: Cameras,
                  chunk: int = 8, context_features: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """EFT feature maps (Q, C, h, w) and RGB (Q, 3, h, w) at the query cameras, in chunks of queries.

        ``context_features`` (``eft.encode`` of the context images) skips the image encoder.
        """
        size = self.latent_size(query_cameras)
        dev = self.unet.device
        ctx = context_images.to(dev, self.eft.dtype)
        ccam = context_cameras.to(dev)
        feats = self.eft.encode(ctx) if context_features is None else context_features
        outs = [self.eft(ctx, ccam, query_cameras[list(range(i, min(i + chunk, len(query_cameras))))].to(dev),
                         size, context_features=feats)
                for i in range(0, len(query_cameras), chunk)]
        return torch.cat([o.features for o in outs]), torch.cat([o.rgb for o in outs])

    @torch.no_grad()
    def __call__(self, context_images: Tensor, context_cameras: Cameras, query_cameras: Cameras,
                 num_inference_steps: int = 25, solver: str = "ddim", guidance_scale: float = 1.0,
                 generator: torch.Generator | None = None, chunk: int = 8,
                 clip_x0: float | None = SAMPLE_CLIP_X0) -> VLDMOutput:
        """Sample one image per query camera from context images (V, 3, H, W) in [0, 1] (x̂0 clipped to ±clip_x0)."""
        cond, rgb = self.condition(context_images, context_cameras, query_cameras, chunk)
        sched = solver_from(self.scheduler, solver, clip_x0)
        latents = torch.cat([
            sample_latents(self.unet, sched, cond[i:i + chunk].to(self.unet.dtype),
                           self.unet.config.out_channels, num_inference_steps, guidance_scale, generator)
            for i in range(0, cond.shape[0], chunk)
        ])
        images = decode(self.vae, latents.to(self.vae.dtype))
        H, W = query_cameras.height, query_cameras.width
        eft_rgb = F.interpolate(rgb.float(), size=(H, W), mode="bilinear", align_corners=False)
        return VLDMOutput(images.float(), eft_rgb, latents)

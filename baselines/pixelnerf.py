"""pixelNeRF (Yu et al., CVPR 2021): a radiance field conditioned on pixel-aligned image features.

ResNet-34 features (conv1 + layer1–3, 512 channels at H/2) of every input view; each sample
point is projected into every view, its feature sampled and concatenated with a positional
encoding of the point in that camera's frame; ResnetFC (mean-pooled over views after block
``combine_layer``); coarse + importance samples through one MLP with both passes supervised.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor

from scenes.backbone import FEATURE_CHANNELS, PixelFeatureEncoder
from scenes.cameras import Cameras, resize_views

from .field_render import FieldRender, render_field, render_views
from .pixel_field import PixelAlignedField, ViewFeatures


class PixelNeRF(ModelMixin, ConfigMixin):
    """Input views (V, 3, H, W) in [0, 1] with cameras -> a field that renders any camera."""

    @register_to_config
    def __init__(self, image_size: int = 64, backbone: str = "resnet34", width: int = 512, n_blocks: int = 5,
                 combine_layer: int = 3, n_coarse: int = 64, n_fine: int = 32):
        super().__init__()
        self.encoder = PixelFeatureEncoder(backbone)
        self.field = PixelAlignedField(FEATURE_CHANNELS, width, n_blocks, combine_layer)

    def encode(self, images: Tensor, cameras: Cameras) -> ViewFeatures:
        """Feature maps of the input views (images at the model's size, cameras matching them)."""
        return ViewFeatures(self.encoder(images * 2 - 1), cameras.to(images.device, images.dtype))

    def forward(self, images: Tensor, cameras: Cameras, origins: Tensor, directions: Tensor,
                stratified: bool = True) -> FieldRender:
        """Render rays (R, 3) given input views: the training forward (coarse and fine kept)."""
        views = self.encode(images, cameras)
        return render_field(self.field, views, origins, directions, self.config.n_coarse, self.config.n_fine,
                            stratified)

    def at_image_size(self, images: Tensor, cameras: Cameras) -> tuple[Tensor, Cameras]:
        """Resize input views to the model's square image size (cameras follow)."""
        return resize_views(images, cameras, self.config.image_size)

    @torch.no_grad()
    def render(self, images: Tensor, cameras: Cameras, targets: Cameras, chunk: int = 256) -> Tensor:
        """Images (T, 3, H, W) at the target cameras (rendered at the targets' own size)."""
        images, cameras = self.at_image_size(images, cameras)
        views = self.encode(images, cameras)
        rgb, _, _ = render_views(self.field, views, targets.to(images.device, images.dtype),
                                 self.config.n_coarse, self.config.n_fine, chunk)
        return rgb

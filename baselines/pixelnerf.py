"""pixelNeRF (Yu et al., CVPR 2021): a radiance field conditioned on pixel-aligned image features.

ResNet-34 features (conv1 + layer1–3, 512 channels at H/2) of every input view; each sample
point is projected into every view and its feature sampled; the MLP input is a positional
encoding of the point in that camera's frame (6 frequencies, 1.5·2^k) and the viewing
direction in that frame; the feature enters through its own linear map before each ResnetFC
block up to the mean over views (the official ``lin_z``); coarse + importance samples through
one MLP with both passes supervised. The density is softplus, not the official ReLU: with a
randomly started encoder a ReLU density died in the first steps (``pixel_field``).
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor

from scenes.backbone import FEATURE_CHANNELS, PixelFeatureEncoder
from scenes.cameras import Cameras, resize_views

from .field_render import FieldImages, FieldRender, render_field, render_views
from .pixel_field import PixelAlignedField, ViewFeatures, default_injections


class PixelNeRF(ModelMixin, ConfigMixin):
    """Input views (V, 3, H, W) in [0, 1] with cameras -> a field that renders any camera."""

    # what a config.json saved before these options existed means (the feature entered once,
    # frequencies 2^k, no view directions, BatchNorm, ReLU density): such models load and behave as trained
    LEGACY_CONFIG = {"norm": "batch", "feature_injections": 1, "pos_freq_factor": 1.0, "use_viewdirs": False,
                     "density": "relu"}

    @register_to_config
    def __init__(self, *, image_size: int = 64, backbone: str = "resnet34", width: int = 512, n_blocks: int = 5,
                 combine_layer: int = 3, n_coarse: int = 64, n_fine: int = 32, norm: str = "batch",
                 feature_injections: int | None = None, pos_freq_factor: float = 1.5, use_viewdirs: bool = True,
                 density: str = "softplus"):
        super().__init__()
        self.encoder = PixelFeatureEncoder(backbone, norm=norm)
        k = feature_injections or default_injections(combine_layer, n_blocks)
        self.field = PixelAlignedField(FEATURE_CHANNELS, width, n_blocks, combine_layer, feature_injections=k,
                                       pos_freq_factor=pos_freq_factor, use_viewdirs=use_viewdirs,
                                       density=density)

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
    def render_images(self, images: Tensor, cameras: Cameras, targets: Cameras, chunk: int = 256) -> FieldImages:
        """RGB, depth and opacity (T, ·, H, W) at the target cameras (rendered at the targets' own size)."""
        images, cameras = self.at_image_size(images, cameras)
        views = self.encode(images, cameras)
        return render_views(self.field, views, targets.to(images.device, images.dtype), self.config.n_coarse,
                            self.config.n_fine, chunk)

    @torch.no_grad()
    def render(self, images: Tensor, cameras: Cameras, targets: Cameras, chunk: int = 256) -> Tensor:
        """Images (T, 3, H, W) at the target cameras (rendered at the targets' own size)."""
        return self.render_images(images, cameras, targets, chunk).rgb

"""Forward-model diffusion (DFM, Tewari et al., NeurIPS 2023): denoising by rendering a 3D field.

The denoiser's output x̂0 is a volume rendering. Context views are encoded at t = 0; the
noisy target x_t is concatenated with a deterministic render of the target camera from the
context-only field (RGB 3, depth 1, ``render_features`` channels: 3 + 3 + 1 + 64 = 71 in the
official model) and encoded at t; a pixel-aligned field conditioned on all views (FiLM time
embedding, mean over views) is rendered at the target camera, and that render *is* x̂0.

The encoder here is the time-conditioned ResNet of the official ``model_type=resnet`` option
(the official default is a DiT-XL/2): pixelNeRF's ResNet layers with a FiLM of the time after
every stage, so a trained pixelNeRF warm-starts it (:meth:`DFM.warm_start`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from scenes.backbone import FEATURE_CHANNELS, PixelFeatureEncoder
from scenes.cameras import Cameras

from .field_render import FieldRender, render_field, render_views
from .pixel_field import PixelAlignedField, TimeMLP, ViewFeatures

TIMESTEPS = 1000


def make_scheduler() -> DDIMScheduler:
    """DFM's schedule: cosine, 1000 steps, x0-prediction; DDIM (eta 0) from t = 999 down."""
    return DDIMScheduler(num_train_timesteps=TIMESTEPS, beta_schedule="squaredcos_cap_v2", prediction_type="sample",
                         clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")


class TimeConditionedEncoder(nn.Module):
    """pixelNeRF's ResNet features with a FiLM of the time after each stage: (B, C_in, H, W), t (B,) -> (B, 512, H/2, W/2).

    Clean RGB (3 channels) goes through the ResNet's own stem, the target input (``target_channels``)
    through a second 7×7 stem (the official ``conv1`` / ``general_conv1``); the rest is shared.
    """

    def __init__(self, backbone: str, target_channels: int, time_dim: int):
        super().__init__()
        self.resnet = PixelFeatureEncoder(backbone)
        self.target_stem = nn.Sequential(nn.Conv2d(target_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                         nn.ReLU(inplace=True))
        self.time = TimeMLP(time_dim)
        widths = (64, 64, 128, 256)  # stem, layer1..3
        self.films = nn.ModuleList(nn.Linear(2 * time_dim, 2 * w) for w in widths)
        for film in self.films:  # start as the plain ResNet
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        emb = self.time(t)
        r = self.resnet

        def film(h: Tensor, k: int) -> Tensor:
            scale, shift = self.films[k](emb)[..., None, None].chunk(2, dim=1)
            return h * (1 + scale) + shift

        x0 = film(r.stem(x) if x.shape[1] == 3 else self.target_stem(x), 0)
        x1 = film(r.layer1(r.pool(x0)), 1)
        x2 = film(r.layer2(x1), 2)
        x3 = film(r.layer3(x2), 3)
        ups = [F.interpolate(h, size=x0.shape[-2:], mode="bilinear", align_corners=False) for h in (x1, x2, x3)]
        return torch.cat([x0, *ups], dim=1)


@dataclass
class TargetCondition:
    """The deterministic render of the target camera from the context-only field."""

    rgb: Tensor  # (1, 3, H, W) in [0, 1]
    depth: Tensor  # (1, 1, H, W)
    features: Tensor  # (1, F, H, W)

    def as_input(self, x_t: Tensor) -> Tensor:
        """The encoder input at the target: [x_t, rgb in [-1, 1], depth, features] (1, 3+3+1+F, H, W)."""
        return torch.cat([x_t, self.rgb * 2 - 1, self.depth, self.features], dim=1)


class DFM(ModelMixin, ConfigMixin):
    """The DFM denoiser: contexts + noisy target view -> a 3D field whose render at the target is x̂0."""

    @register_to_config
    def __init__(self, image_size: int = 64, backbone: str = "resnet34", width: int = 512, n_blocks: int = 5,
                 combine_layer: int = 3, render_features: int = 64, time_dim: int = 256, n_coarse: int = 64,
                 n_fine: int = 64, n_cond: int = 64):
        super().__init__()
        self.encoder = TimeConditionedEncoder(backbone, 3 + 3 + 1 + render_features, time_dim)
        self.field = PixelAlignedField(FEATURE_CHANNELS, width, n_blocks, combine_layer, render_features, time_dim)
        self.cond_field = PixelAlignedField(FEATURE_CHANNELS, width, n_blocks, combine_layer, render_features, time_dim)
        self.scheduler = make_scheduler()

    # ------------------------------------------------------------------ the pieces
    def encode_contexts(self, images: Tensor, cameras: Cameras) -> ViewFeatures:
        """Clean context views (V, 3, H, W) in [0, 1] -> features at t = 0."""
        t = torch.zeros(images.shape[0], device=images.device)
        return ViewFeatures(self.encoder(images * 2 - 1, t), cameras.to(images.device, images.dtype), t)

    def condition(self, contexts: ViewFeatures, target: Cameras) -> TargetCondition:
        """Render the target camera (1 camera) from the context-only field: RGB, depth, features."""
        rgb, depth, feats = render_views(self.cond_field, contexts, target, self.config.n_cond, 0,
                                         chunk=self.render_chunk)
        return TargetCondition(rgb, depth, feats)

    def encode_target(self, x_t: Tensor, t: Tensor, target: Cameras, cond: TargetCondition) -> ViewFeatures:
        """Noisy target (1, 3, H, W) in [-1, 1] at time t (1,) -> its features."""
        t = t.reshape(1).to(x_t.device)
        return ViewFeatures(self.encoder(cond.as_input(x_t), t), target.to(x_t.device, x_t.dtype), t.float())

    def render_rays(self, scene: ViewFeatures, origins: Tensor, directions: Tensor, stratified: bool = False,
                    projected: bool = False) -> FieldRender:
        """Render rays (R, 3) of the field conditioned on ``scene`` (contexts + the noisy target)."""
        return render_field(self.field, scene, origins, directions, self.config.n_coarse, self.config.n_fine,
                            stratified, projected=projected)

    @torch.no_grad()
    def render_scene(self, scene: ViewFeatures, cameras: Cameras) -> Tensor:
        """Full images (T, 3, H, W) in [0, 1] of the field conditioned on ``scene`` (inference: no autograd)."""
        rgb, _, _ = render_views(self.field, scene, cameras.to(scene.maps.device, scene.maps.dtype),
                                 self.config.n_coarse, self.config.n_fine, chunk=self.render_chunk)
        return rgb

    render_chunk = 256  # rays per rendering chunk: small chunks keep the MLP's activations in cache

    def forward(self, images: Tensor, cameras: Cameras, x_t: Tensor, t: Tensor, target: Cameras,
                origins: Tensor, directions: Tensor) -> tuple[FieldRender, TargetCondition]:
        """Training forward: x̂0 at rays (R, 3) (any cameras) and the deterministic target render."""
        contexts = self.encode_contexts(images, cameras)
        cond = self.condition(contexts, target)
        scene = ViewFeatures.cat([contexts, self.encode_target(x_t, t, target, cond)])
        return self.render_rays(scene, origins, directions, stratified=True), cond

    # ------------------------------------------------------------------ warm start
    @torch.no_grad()
    def warm_start(self, pixelnerf) -> int:
        """Copy a trained pixelNeRF into the encoder and both fields wherever shapes allow; returns tensors copied.

        The target stem gets the RGB stem's weights on its rendered-RGB channels (3:6) and zeros
        elsewhere, so at the start the target features are pixelNeRF's features of the render.
        """
        copied = 0
        src_enc = pixelnerf.encoder.state_dict()
        dst = self.encoder.resnet.state_dict()
        for k, v in src_enc.items():
            if k in dst and dst[k].shape == v.shape:
                dst[k].copy_(v)
                copied += 1
        self.encoder.resnet.load_state_dict(dst)
        conv, bn = self.encoder.target_stem[0], self.encoder.target_stem[1]
        conv.weight.zero_()
        conv.weight[:, 3:6] = src_enc["stem.0.weight"]
        bn.load_state_dict({k[len("stem.1."):]: v for k, v in src_enc.items() if k.startswith("stem.1.")})
        copied += 1 + len(bn.state_dict())
        src_field = pixelnerf.field.state_dict()
        for field in (self.field, self.cond_field):
            dst = field.state_dict()
            for k, v in src_field.items():
                if k not in dst:
                    continue
                if dst[k].shape == v.shape:
                    dst[k].copy_(v)
                elif k.startswith("mlp.lin_out"):  # 4 outputs (rgb, sigma) of 4 + F: extra features start at 0
                    dst[k].zero_()
                    dst[k][: v.shape[0]] = v
                else:
                    continue
                copied += 1
            field.load_state_dict(dst)
        return copied

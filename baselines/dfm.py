"""Forward-model diffusion (DFM, Tewari et al., NeurIPS 2023): denoising by rendering a 3D field.

The denoiser's output x̂0 is a volume rendering. Context views are encoded at t = 0; the
noisy target x_t is concatenated with a deterministic render of the target camera from the
context-only field (RGB 3, depth 1, ``render_features`` channels: 3 + 3 + 1 + 64 = 71 in the
official model) and encoded at t; a pixel-aligned field conditioned on all views (FiLM time
embedding, mean over views) is rendered at the target camera, and that render *is* x̂0.

The encoder (:mod:`baselines.dfm_encoder`) is a time-conditioned ResNet with GroupNorm and the
official full-resolution path; a trained pixelNeRF warm-starts it (:meth:`DFM.warm_start`).
The denoising field is rendered the same way in training and sampling: a fixed grid of
``n_coarse`` samples plus ``n_fine`` random importance samples, as the official renderer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor

from scenes.backbone import FEATURE_CHANNELS
from scenes.cameras import Cameras

from .dfm_encoder import TimeConditionedEncoder
from .field_render import FieldImages, FieldRender, render_field, render_views
from .pixel_field import PixelAlignedField, ViewFeatures, default_injections

TIMESTEPS = 1000


def make_scheduler() -> DDIMScheduler:
    """DFM's schedule: cosine, 1000 steps, x0-prediction; DDIM (eta 0) from t = 999 down."""
    return DDIMScheduler(num_train_timesteps=TIMESTEPS, beta_schedule="squaredcos_cap_v2", prediction_type="sample",
                         clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")


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

    # what a config.json saved before these options existed means (BatchNorm encoder at H/2, the
    # feature entered once, frequencies 2^k, no view directions, ReLU density): such models still load as trained
    LEGACY_CONFIG = {"norm": "batch", "high_res": False, "feature_injections": 1, "pos_freq_factor": 1.0,
                     "use_viewdirs": False, "density": "relu"}

    @register_to_config
    def __init__(self, *, image_size: int = 64, backbone: str = "resnet34", width: int = 512, n_blocks: int = 5,
                 combine_layer: int = 3, render_features: int = 64, time_dim: int = 256, n_coarse: int = 64,
                 n_fine: int = 64, n_cond: int = 64, norm: str = "group", high_res: bool = True,
                 feature_injections: int | None = None, pos_freq_factor: float = 1.5, use_viewdirs: bool = True,
                 density: str = "softplus"):
        super().__init__()
        self.encoder = TimeConditionedEncoder(backbone, 3 + 3 + 1 + render_features, time_dim, norm, high_res)
        k = feature_injections or default_injections(combine_layer, n_blocks)
        fields = [PixelAlignedField(FEATURE_CHANNELS, width, n_blocks, combine_layer, render_features, time_dim,
                                    k, pos_freq_factor, use_viewdirs, density) for _ in range(2)]
        self.field, self.cond_field = fields
        self.scheduler = make_scheduler()

    # ------------------------------------------------------------------ the pieces
    def encode_contexts(self, images: Tensor, cameras: Cameras) -> ViewFeatures:
        """Clean context views (V, 3, H, W) in [0, 1] -> features at t = 0."""
        t = torch.zeros(images.shape[0], device=images.device)
        return ViewFeatures(self.encoder(images * 2 - 1, t), cameras.to(images.device, images.dtype), t)

    def condition(self, contexts: ViewFeatures, target: Cameras) -> TargetCondition:
        """Render the target camera (1 camera) from the context-only field: RGB, depth, features."""
        out = render_views(self.cond_field, contexts, target, self.config.n_cond, 0, chunk=self.render_chunk)
        return TargetCondition(out.rgb, out.depth, out.features)

    def encode_target(self, x_t: Tensor, t: Tensor, target: Cameras, cond: TargetCondition) -> ViewFeatures:
        """Noisy target (1, 3, H, W) in [-1, 1] at time t (1,) -> its features."""
        t = t.reshape(1).to(x_t.device)
        return ViewFeatures(self.encoder(cond.as_input(x_t), t), target.to(x_t.device, x_t.dtype), t.float())

    def render_rays(self, scene: ViewFeatures, origins: Tensor, directions: Tensor, projected: bool = False,
                    generator: torch.Generator | None = None) -> FieldRender:
        """Render rays (R, 3) of the field conditioned on ``scene`` (contexts + the noisy target)."""
        return render_field(self.field, scene, origins, directions, self.config.n_coarse, self.config.n_fine,
                            stratified=False, random_fine=True, projected=projected, generator=generator)

    @torch.no_grad()
    def render_scene_images(self, scene: ViewFeatures, cameras: Cameras,
                            generator: torch.Generator | None = None) -> FieldImages:
        """RGB, depth, opacity (T, ·, H, W) of the field conditioned on ``scene`` (inference: no autograd)."""
        return render_views(self.field, scene, cameras.to(scene.maps.device, scene.maps.dtype), self.config.n_coarse,
                            self.config.n_fine, chunk=self.render_chunk, random_fine=True, generator=generator)

    @torch.no_grad()
    def render_scene(self, scene: ViewFeatures, cameras: Cameras, generator: torch.Generator | None = None) -> Tensor:
        """Full images (T, 3, H, W) in [0, 1] of the field conditioned on ``scene`` (inference: no autograd)."""
        return self.render_scene_images(scene, cameras, generator).rgb

    render_chunk = 256  # rays per rendering chunk: small chunks keep the MLP's activations in cache

    def forward(self, images: Tensor, cameras: Cameras, x_t: Tensor, t: Tensor, target: Cameras,
                origins: Tensor, directions: Tensor) -> tuple[FieldRender, TargetCondition]:
        """Training forward: x̂0 at rays (R, 3) (any cameras) and the deterministic target render."""
        contexts = self.encode_contexts(images, cameras)
        cond = self.condition(contexts, target)
        scene = ViewFeatures.cat([contexts, self.encode_target(x_t, t, target, cond)])
        return self.render_rays(scene, origins, directions), cond

    # ------------------------------------------------------------------ warm start
    @torch.no_grad()
    def warm_start(self, pixelnerf) -> int:
        """Copy a trained pixelNeRF into the encoder and both fields wherever shapes allow; returns tensors copied.

        The target stem keeps its random initialisation (as the official ``general_conv1``) except
        on its rendered-RGB channels (3:6), which get the RGB stem's weights; the fields' extra
        feature outputs (rows 4:) start at zero, as the official zero-padding. Both learn from the
        first step: the stem's random depth/feature weights pass the gradient to those rows.
        Norm layers of a BatchNorm pixelNeRF give their affine weights only (an approximation).
        """
        copied = 0
        src_enc = pixelnerf.encoder.state_dict()
        copied += _copy_matching(self.encoder.resnet, src_enc)
        conv, norm = self.encoder.target_stem[0], self.encoder.target_stem[1]
        conv.weight[:, 3:6] = src_enc["stem.0.weight"]
        stem_norm = {k[len("stem.1."):]: v for k, v in src_enc.items() if k.startswith("stem.1.")}
        copied += 1 + _copy_matching(norm, stem_norm)
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


def _copy_matching(module, source: dict) -> int:
    """Copy every tensor of ``source`` whose name and shape ``module`` has; returns how many."""
    dst = module.state_dict()
    n = 0
    for k, v in source.items():
        if k in dst and dst[k].shape == v.shape:
            dst[k].copy_(v)
            n += 1
    module.load_state_dict(dst)
    return n

"""Epipolar Feature Transformer (EFT): context views -> a feature map and an RGB image at a query camera.

One query ray per output pixel; ``n_samples`` uniform depths per ray around the object; every
sample is projected into every context view, where pixel-aligned ResNet features and the RGB
are sampled. Three transformers follow (SparseFusion's EFT):

- T1 over views, per sample point: [ref-Plücker, depth, feature];
- T2 over the samples of each epipolar line (per view): [query-Plücker, ref-Plücker, depth, f1],
  then attention pooling over samples;
- T3 over views, per ray: [query-Plücker, ref-Plücker of the middle sample, f2], then attention
  pooling over views -> one feature per ray; RGB = sigmoid(Linear(feature)).

Geometry is expressed in each query camera's frame (query camera = identity), so the EFT does
not depend on the world frame. Works with any number of context views.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from scenes.backbone import FEATURE_CHANNELS, PixelFeatureEncoder
from scenes.cameras import Cameras
from scenes.encoding import harmonic_dim, harmonic_embedding
from scenes.projection import project_points, sample_at_pixels


@dataclass
class EFTOutput:
    """EFT results at the query cameras."""

    features: Tensor  # (Q, d_model, h, w)
    rgb: Tensor  # (Q, 3, h, w) in [0, 1]


@dataclass
class EpipolarSamples:
    """The EFT's query-ray samples, in each query camera's frame, and what the context views see there."""

    dirs: Tensor  # (Q, R, 3) unit ray directions
    depth: Tensor  # (Q, R, S) sample depths along them
    points: Tensor  # (Q, R, S, 3) sample points
    centres: Tensor  # (Q, V, 3) context camera centres
    uv: Tensor  # (Q, V, R, S, 2) context pixels of every point
    values: Tensor  # (Q, R, S, V, C) context maps sampled there


class _Encoder(nn.Module):
    """Linear(d_in, d) + GELU, then a TransformerEncoder over the sequence axis (batch first)."""

    def __init__(self, d_in: int, d: int, layers: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(d_in, d), nn.GELU())
        layer = nn.TransformerEncoderLayer(d, heads, ffn, dropout, activation="relu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x: Tensor) -> Tensor:  # (B, L, d_in) -> (B, L, d)
        return self.encoder(self.proj(x))


class _AttentionPool(nn.Module):
    """Softmax-weighted sum over the sequence axis with learned scores."""

    def __init__(self, d: int):
        super().__init__()
        self.score = nn.Linear(d, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, L, d) -> (B, d)
        w = torch.softmax(self.score(x), dim=1)
        return (w * x).sum(1)


class EpipolarFeatureTransformer(ModelMixin, ConfigMixin):
    """SparseFusion's EFT as a diffusers model (``save_pretrained`` / ``from_pretrained``)."""

    @register_to_config
    def __init__(
        self,
        backbone: str = "resnet18",
        d_model: int = 256,
        n_layers: int = 4,
        n_heads: int = 1,
        ffn_dim: int = 256,
        dropout: float = 0.1,
        n_samples: int = 20,
        n_freqs: int = 6,
        depth_radius: float = 1.5,
    ):
        super().__init__()
        self.encoder = PixelFeatureEncoder(backbone)
        pl, dp = harmonic_dim(6, n_freqs), harmonic_dim(1, n_freqs)
        feat = FEATURE_CHANNELS + 3
        args = (d_model, n_layers, n_heads, ffn_dim, dropout)
        self.t1 = _Encoder(pl + dp + feat, *args)
        self.t2 = _Encoder(pl + pl + dp + d_model, *args)
        self.t3 = _Encoder(pl + pl + d_model, *args)
        self.pool_samples = _AttentionPool(d_model)
        self.pool_views = _AttentionPool(d_model)
        self.rgb_head = nn.Linear(d_model, 3)

    # ------------------------------------------------------------------ geometry
    def query_samples(self, query: Cameras, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Unit ray directions (Q, R, 3) in each query camera's frame and depths (Q, R, S).

        R = h·w rays through the pixel centres of the query camera resized to ``size``;
        depths are uniform in [d − r, d + r] around the distance d to the world origin.
        """
        cams = query.resize(*size)
        uv = cams.pixel_centers().reshape(1, -1, 2).expand(len(cams), -1, -1)
        pix = torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1)
        d = torch.linalg.solve(cams.K, pix.transpose(1, 2)).transpose(1, 2)
        d = d / d.norm(dim=-1, keepdim=True)
        dist = query.t.norm(dim=-1)  # world origin (object centre) in the query frame is t
        r = self.config.depth_radius
        near, far = (dist - r).clamp_min(0.1), dist + r
        steps = torch.linspace(0, 1, self.config.n_samples, device=d.device, dtype=d.dtype)
        depth = near[:, None] + (far - near)[:, None] * steps  # (Q, S)
        return d, depth[:, None, :].expand(-1, d.shape[1], -1)

    @staticmethod
    def relative_context(query: Cameras, context: Cameras) -> tuple[Tensor, Tensor, Tensor]:
        """Context cameras in each query frame: R (Q, V, 3, 3), t (Q, V, 3), centres (Q, V, 3)."""
        Rq, tq = query.R[:, None], query.t[:, None]
        Rv, tv = context.R[None], context.t[None]
        R = Rv @ Rq.transpose(-1, -2)
        t = tv - (R @ tq[..., None])[..., 0]
        centres = -(R.transpose(-1, -2) @ t[..., None])[..., 0]
        return R, t, centres

    def epipolar_samples(self, context_maps: list[Tensor], context_cameras: Cameras, query_cameras: Cameras,
                         size: tuple[int, int]) -> EpipolarSamples:
        """Sample context maps [(V, C_i, h_i, w_i)] at every query ray's depth samples; values concatenate the C_i.

        Each map covers the whole context image at its own resolution (features at H/2, the
        RGB at H) and is sampled bilinearly where the context cameras see each point.
        """
        ccam, qcam = context_cameras, query_cameras
        V = len(ccam)
        dirs, depth = self.query_samples(qcam, size)  # (Q, R, 3), (Q, R, S)
        Q, Rn, S = depth.shape
        pts = dirs[:, :, None, :] * depth[..., None]  # (Q, R, S, 3) in query frames
        R_rel, t_rel, centres = self.relative_context(qcam, ccam)
        K = ccam.K[None].expand(Q, -1, -1, -1)
        flat = pts.reshape(Q, 1, Rn * S, 3).expand(-1, V, -1, -1)
        uv, _ = project_points(R_rel, t_rel, K, flat)  # (Q, V, R·S, 2)
        uv_v = uv.transpose(0, 1).reshape(V, Q * Rn * S, 2)
        values = torch.cat([sample_at_pixels(m, uv_v, ccam.height, ccam.width) for m in context_maps], -1)  # (V, Q·R·S, C)
        values = values.reshape(V, Q, Rn, S, -1).permute(1, 2, 3, 0, 4)  # (Q, R, S, V, C)
        return EpipolarSamples(dirs, depth, pts, centres, uv.reshape(Q, V, Rn, S, 2), values)

    # ------------------------------------------------------------------ forward
    def forward(
        self, context_images: Tensor, context_cameras: Cameras, query_cameras: Cameras,
        size: tuple[int, int], context_features: Tensor | None = None,
    ) -> EFTOutput:
        """Features and RGB at query cameras (Q) from context images (V, 3, H, W) in [0, 1].

        ``size`` = (h, w) of the output maps (the latent size); ``context_features`` may be
        passed to reuse :meth:`encode` across calls.
        """
        cfg = self.config
        V = context_images.shape[0]
        dtype = context_images.dtype
        feats = self.encode(context_images) if context_features is None else context_features
        qcam, ccam = query_cameras.to(dtype=torch.float32), context_cameras.to(dtype=torch.float32)
        ep = self.epipolar_samples([feats, context_images.to(feats.dtype)], ccam, qcam, size)  # values: 515 channels
        dirs, depth, pts, centres, sampled = ep.dirs, ep.depth, ep.points, ep.centres, ep.values
        Q, Rn, S = depth.shape

        n = cfg.n_freqs
        ref_dir = pts[:, None] - centres[:, :, None, None, :]  # (Q, V, R, S, 3)
        ref_dir = ref_dir / ref_dir.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        c = centres[:, :, None, None, :].expand_as(ref_dir)
        ref_pl = harmonic_embedding(torch.cat([ref_dir, torch.linalg.cross(c, ref_dir, dim=-1)], -1), n)
        ref_pl = ref_pl.permute(0, 2, 3, 1, 4)  # (Q, R, S, V, 78)
        query_pl = harmonic_embedding(torch.cat([dirs, torch.zeros_like(dirs)], -1), n)  # (Q, R, 78)
        depth_enc = harmonic_embedding(depth[..., None], n)  # (Q, R, S, 13)

        # T1: over views, per sample point.
        x1 = torch.cat([ref_pl, depth_enc[:, :, :, None].expand(-1, -1, -1, V, -1), sampled.to(dtype)], -1)
        f1 = self.t1(x1.reshape(Q * Rn * S, V, -1)).reshape(Q, Rn, S, V, -1)
        # T2: over samples along each epipolar line, per view; pool over samples.
        x2 = torch.cat([
            query_pl[:, :, None, None].expand(-1, -1, S, V, -1), ref_pl,
            depth_enc[:, :, :, None].expand(-1, -1, -1, V, -1), f1,
        ], -1).permute(0, 1, 3, 2, 4).reshape(Q * Rn * V, S, -1)
        f2 = self.pool_samples(self.t2(x2)).reshape(Q, Rn, V, -1)
        # T3: over views, per ray; pool over views.
        x3 = torch.cat([query_pl[:, :, None].expand(-1, -1, V, -1), ref_pl[:, :, S // 2], f2], -1)
        f3 = self.pool_views(self.t3(x3.reshape(Q * Rn, V, -1))).reshape(Q, Rn, -1)

        h, w = size
        rgb = torch.sigmoid(self.rgb_head(f3))
        return EFTOutput(
            f3.transpose(1, 2).reshape(Q, -1, h, w), rgb.transpose(1, 2).reshape(Q, 3, h, w)
        )

    def encode(self, context_images: Tensor) -> Tensor:
        """Pixel-aligned features (V, 512, H/2, W/2) of context images (V, 3, H, W) in [0, 1]."""
        return self.encoder(context_images)

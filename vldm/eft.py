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

    def encode_projected(self, h: Tensor) -> Tensor:  # (B, L, d) -> (B, L, d)
        """The encoder on inputs already through the Linear (the GELU and transformer follow)."""
        return self.encoder(self.proj[1](h))


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
        *,
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

    def epipolar_points(self, context_cameras: Cameras, query_cameras: Cameras, size: tuple[int, int]):
        """Query-ray samples and where the context cameras see them (float32 geometry).

        Returns dirs (Q, R, 3), depth (Q, R, S), points (Q, R, S, 3) in query frames, context
        centres (Q, V, 3) in query frames and the context pixels uv (Q, V, R·S, 2).
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
        return dirs, depth, pts, centres, uv

    def epipolar_samples(self, context_maps: list[Tensor], context_cameras: Cameras, query_cameras: Cameras,
                         size: tuple[int, int]) -> EpipolarSamples:
        """Sample context maps [(V, C_i, h_i, w_i)] at every query ray's depth samples; values concatenate the C_i.

        Each map covers the whole context image at its own resolution (features at H/2, the
        RGB at H) and is sampled bilinearly where the context cameras see each point.
        """
        ccam = context_cameras
        dirs, depth, pts, centres, uv = self.epipolar_points(ccam, query_cameras, size)
        Q, Rn, S = depth.shape
        V = len(ccam)
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
        V, _, H, W = context_images.shape
        dtype = context_images.dtype
        feats = self.encode(context_images) if context_features is None else context_features
        # geometry in float32 even under autocast (bf16 rays and projections are off by pixels)
        with torch.autocast(context_images.device.type, enabled=False):
            qcam, ccam = query_cameras.to(dtype=torch.float32), context_cameras.to(dtype=torch.float32)
            dirs, depth, pts, centres, uv = self.epipolar_points(ccam, qcam, size)
            Q, Rn, S = depth.shape
            uv_v = uv.transpose(0, 1).reshape(V, Q * Rn * S, 2)

            n = cfg.n_freqs
            ref_dir = pts[:, None] - centres[:, :, None, None, :]  # (Q, V, R, S, 3)
            ref_dir = ref_dir / ref_dir.norm(dim=-1, keepdim=True).clamp_min(1e-8)
            c = centres[:, :, None, None, :].expand_as(ref_dir)
            ref_pl = harmonic_embedding(torch.cat([ref_dir, torch.linalg.cross(c, ref_dir, dim=-1)], -1), n)
            ref_pl = ref_pl.to(dtype)  # (Q, V, R, S, 78)
            query_pl = harmonic_embedding(torch.cat([dirs, torch.zeros_like(dirs)], -1), n).to(dtype)  # (Q, R, 78)
            depth_enc = harmonic_embedding(depth[..., None], n).to(dtype)  # (Q, R, S, 13)
        pl, dp = query_pl.shape[-1], depth_enc.shape[-1]

        # The first Linear of T1 and T2 is applied to each part of its input before the parts are
        # broadcast (a Linear of a concatenation is the sum of Linears of the parts, and bilinear
        # sampling commutes with a per-pixel Linear): the same function as concatenating
        # [ref-Plücker, depth, sampled features + RGB] (T1) and [query-Plücker, ref-Plücker,
        # depth, f1] (T2) first, at a fraction of the memory traffic (the 512-channel feature
        # map is projected to d_model channels before it is sampled at every epipolar point).
        w1, b1 = self.t1.proj[0].weight, self.t1.proj[0].bias  # (d, pl + dp + 515), (d,)
        w1_pl, w1_dp, w1_f, w1_rgb = w1.split([pl, dp, FEATURE_CHANNELS, 3], dim=1)
        w2, b2 = self.t2.proj[0].weight, self.t2.proj[0].bias  # (d, pl + pl + dp + d), (d,)
        w2_q, w2_pl, w2_dp, w2_f = w2.split([pl, pl, dp, cfg.d_model], dim=1)
        d = cfg.d_model
        feat_map = torch.einsum("vchw,dc->vdhw", feats.to(dtype), w1_f)  # (V, d, H/2, W/2)
        feat_map = feat_map.to(torch.promote_types(feat_map.dtype, torch.float32))  # sampled at >= fp32 under autocast
        s1 = sample_at_pixels(feat_map, uv_v, H, W) + sample_at_pixels(context_images, uv_v, H, W) @ w1_rgb.T
        s1 = s1.reshape(V, Q, Rn, S, d).transpose(0, 1)  # (Q, V, R, S, d)
        ref12 = ref_pl @ torch.cat([w1_pl, w2_pl]).T  # (Q, V, R, S, 2d)
        dep12 = depth_enc @ torch.cat([w1_dp, w2_dp]).T  # (Q, R, S, 2d)

        # T1: over views, per sample point.
        h1 = s1 + ref12[..., :d] + dep12[:, None, ..., :d] + b1  # (Q, V, R, S, d)
        h1 = h1.permute(0, 2, 3, 1, 4).reshape(Q * Rn * S, V, d)
        f1 = self.t1.encode_projected(h1).reshape(Q, Rn, S, V, d)
        # T2: over samples along each epipolar line, per view; pool over samples.
        h2 = (f1 @ w2_f.T).permute(0, 3, 1, 2, 4) + ref12[..., d:] + dep12[:, None, ..., d:] \
            + (query_pl @ w2_q.T)[:, None, :, None] + b2  # (Q, V, R, S, d)
        h2 = h2.transpose(1, 2).reshape(Q * Rn * V, S, d)
        f2 = self.pool_samples(self.t2.encode_projected(h2)).reshape(Q, Rn, V, -1)
        # T3: over views, per ray; pool over views.
        ref_mid = ref_pl[:, :, :, S // 2].transpose(1, 2)  # (Q, R, V, 78)
        x3 = torch.cat([query_pl[:, :, None].expand(-1, -1, V, -1), ref_mid, f2], -1)
        f3 = self.pool_views(self.t3(x3.reshape(Q * Rn, V, -1))).reshape(Q, Rn, -1)

        h, w = size
        rgb = torch.sigmoid(self.rgb_head(f3))
        return EFTOutput(
            f3.transpose(1, 2).reshape(Q, -1, h, w), rgb.transpose(1, 2).reshape(Q, 3, h, w)
        )

    def encode(self, context_images: Tensor) -> Tensor:
        """Pixel-aligned features (V, 512, H/2, W/2) of context images (V, 3, H, W) in [0, 1]."""
        return self.encoder(context_images)

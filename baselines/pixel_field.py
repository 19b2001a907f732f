"""The pixel-aligned radiance field shared by pixelNeRF and DFM.

For every view v and 3D point p: project p into v, sample v's feature map there, append a
positional encoding of p in v's camera frame (frequencies ``pos_freq_factor``·2^k, pixelNeRF's
1.5) and, optionally, the ray direction in that frame, and run pixelNeRF's ResnetFC; after
``combine_layer`` blocks the per-view activations are mean-pooled, so the field takes any
number of views in any order. The image feature enters through a linear map before each of
the first ``feature_injections`` blocks (pixelNeRF's ``lin_z``: every block before the mean;
DFM's field: only the input layer). With ``time_dim`` > 0 every block is FiLM-modulated by a
per-view time embedding (DFM: 0 for clean contexts, t for the noisy target); after pooling
the last view's embedding is used. The density is ReLU (pixelNeRF's, DFM) or softplus of the MLP's
fourth output: with features that are all positive (a randomly started encoder ends in a ReLU)
the density's pre-activation starts nearly the same at every point, and a ReLU there can go
negative everywhere in the first steps and never come back (no gradient: a black render).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scenes.cameras import Cameras
from scenes.encoding import harmonic_dim, harmonic_embedding
from scenes.projection import project_points, sample_at_pixels

POS_FREQS = 6
DENSITIES = ("relu", "softplus")


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of (fractional) timesteps t (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


class TimeMLP(nn.Module):
    """Timesteps (N,) -> embedding (N, dim): sinusoid, then a two-layer MLP."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.net = nn.Sequential(nn.Linear(dim, dim * 2), nn.SiLU(), nn.Linear(dim * 2, dim * 2))

    def forward(self, t: Tensor) -> Tensor:
        return self.net(timestep_embedding(t, self.dim))


class ResBlockFC(nn.Module):
    """Two-layer residual FC block (pixelNeRF), optionally FiLM-modulated by an embedding."""

    def __init__(self, width: int, film_dim: int = 0):
        super().__init__()
        self.fc0, self.fc1 = nn.Linear(width, width), nn.Linear(width, width)
        nn.init.zeros_(self.fc1.weight)  # pixelNeRF: each block starts as the identity
        nn.init.zeros_(self.fc1.bias)
        self.film = nn.Linear(film_dim, 2 * width) if film_dim else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        h = self.fc0(F.relu(x))
        if self.film is not None and emb is not None:
            scale, shift = self.film(emb).chunk(2, dim=-1)
            h = h * (1 + scale) + shift
        return x + self.fc1(F.relu(h))


class ResnetFC(nn.Module):
    """pixelNeRF's MLP after its input layer: per-view activations (V, P, width) -> (P, d_out).

    The input layer lives in :class:`PixelAlignedField`, which applies its feature part to the
    feature maps before sampling (exact: bilinear sampling commutes with a linear map).
    """

    def __init__(self, d_out: int, width: int = 512, n_blocks: int = 5, combine_layer: int = 3, time_dim: int = 0):
        super().__init__()
        self.combine_layer = combine_layer
        self.time = TimeMLP(time_dim) if time_dim else None
        film = 2 * time_dim if time_dim else 0
        self.blocks = nn.ModuleList(ResBlockFC(width, film) for _ in range(n_blocks))
        self.lin_out = nn.Linear(width, d_out)

    def forward(self, h: Tensor, times: Tensor | None = None, injections: list[Tensor] = ()) -> Tensor:
        """h (V, P, width); times (V,) per view (needed when the MLP is time-conditioned).

        ``injections[i]`` (V, P, width) is added before block i + 1 (all before the mean).
        """
        emb = self.time(times)[:, None, :] if self.time is not None else None  # (V, 1, 2·time_dim)
        for i, block in enumerate(self.blocks):
            if i == self.combine_layer:
                h = h.mean(dim=0)  # (P, width)
                emb = emb[-1] if emb is not None else None
            if 0 < i <= len(injections):
                h = h + injections[i - 1]
            h = block(h, emb)
        if self.combine_layer >= len(self.blocks):
            h = h.mean(dim=0)
        return self.lin_out(F.relu(h))


@dataclass
class ViewFeatures:
    """Feature maps of posed views: what a pixel-aligned field is conditioned on."""

    maps: Tensor  # (V, C, h, w), covering each view's full image
    cameras: Cameras  # V cameras (height/width: the image the maps cover)
    times: Tensor | None = None  # (V,) per-view diffusion time (DFM), None for pixelNeRF

    def __len__(self) -> int:
        return self.maps.shape[0]

    @staticmethod
    def cat(parts: list["ViewFeatures"]) -> "ViewFeatures":
        """Views of several parts in order (their maps share one size)."""
        times = None if parts[0].times is None else torch.cat([p.times for p in parts])
        return ViewFeatures(torch.cat([p.maps for p in parts]), Cameras.cat([p.cameras for p in parts]), times)


def sample_view_features(views: ViewFeatures, points: Tensor) -> tuple[Tensor, Tensor]:
    """Project world points (P, 3) into every view: sampled maps (V, P, C) and camera-frame points (V, P, 3)."""
    cams = views.cameras
    pts = points[None].expand(len(views), -1, -1)
    uv, _ = project_points(cams.R, cams.t, cams.K, pts)  # (V, P, 2)
    feats = sample_at_pixels(views.maps, uv, cams.height, cams.width)
    x_cam = torch.einsum("vij,vpj->vpi", cams.R, pts) + cams.t[:, None, :]
    return feats, x_cam


def default_injections(combine_layer: int, n_blocks: int) -> int:
    """pixelNeRF's number of ``lin_z`` maps: every block before the mean over views."""
    return max(1, min(combine_layer, n_blocks))


class PixelAlignedField(nn.Module):
    """Points (P, 3) + view features -> rgb (P, 3) in [0, 1], sigma (P,) >= 0, extra features (P, F).

    ``density``: relu or softplus (never without a gradient) of the MLP's density output.

    The MLP's input layer is W·[feature, posenc(x_cam), dir_cam] + b, split as ``lin_feat``
    (applied to the maps once per view, a 1×1 convolution; it also holds the later injections'
    maps, ``feature_injections``·width rows) and ``lin_pos`` (applied per point).
    """

    def __init__(self, feature_channels: int, width: int, n_blocks: int, combine_layer: int,
                 extra_features: int = 0, time_dim: int = 0, feature_injections: int = 1,
                 pos_freq_factor: float = 1.0, use_viewdirs: bool = False, density: str = "relu"):
        super().__init__()
        if density not in DENSITIES:
            raise ValueError(f"density={density!r} must be one of {DENSITIES}")
        self.density = F.relu if density == "relu" else F.softplus
        most = default_injections(combine_layer, n_blocks)
        if not 1 <= feature_injections <= most:
            raise ValueError(f"feature_injections={feature_injections} must lie in [1, {most}] "
                             "(the blocks before the mean over views)")
        self.extra_features, self.width = extra_features, width
        self.injections, self.pos_freq_factor, self.use_viewdirs = feature_injections, pos_freq_factor, use_viewdirs
        self.lin_feat = nn.Linear(feature_channels, feature_injections * width, bias=False)
        self.lin_pos = nn.Linear(harmonic_dim(3, POS_FREQS) + 3 * use_viewdirs, width)
        self.mlp = ResnetFC(4 + extra_features, width, n_blocks, combine_layer, time_dim)

    def project_maps(self, views: ViewFeatures) -> ViewFeatures:
        """The feature maps through every injection's linear map: (V, C, h, w) -> (V, k·width, h, w)."""
        maps = torch.einsum("oc,vchw->vohw", self.lin_feat.weight, views.maps)
        return ViewFeatures(maps, views.cameras, views.times)

    def forward(self, views: ViewFeatures, points: Tensor, directions: Tensor | None = None,
                projected: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Evaluate at points (P, 3) seen along ``directions`` (P, 3) (needed with view directions).

        ``projected``: the views already went through :meth:`project_maps`.
        """
        if not projected:
            views = self.project_maps(views)
        feats, x_cam = sample_view_features(views, points)  # (V, P, k·width), (V, P, 3)
        h, *injections = feats.split(self.width, dim=-1)
        pos = harmonic_embedding(x_cam, POS_FREQS, omega0=self.pos_freq_factor)
        if self.use_viewdirs:
            if directions is None:
                raise ValueError("this field uses view directions: pass directions")
            d = F.normalize(directions, dim=-1)
            pos = torch.cat([pos, torch.einsum("vij,pj->vpi", views.cameras.R.to(d), d)], dim=-1)
        out = self.mlp(h + self.lin_pos(pos), views.times, injections)
        return torch.sigmoid(out[:, :3]), self.density(out[:, 3]), out[:, 4:]

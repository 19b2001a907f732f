"""Multiresolution hash encoding (Instant-NGP), pure PyTorch, with a tiny-cuda-nn twin on CUDA.

Level l has resolution N_l = ⌊N_min · b^l⌋, b = exp((ln N_max − ln N_min) / (L − 1)). A point
x ∈ [0, 1]³ is scaled to x·N_l; the 8 surrounding grid vertices are looked up in the level's
table (directly indexed when (N_l + 1)³ fits in it, else spatially hashed with the primes
1, 2654435761, 805459861 and XOR) and trilinearly interpolated. Gradients flow to the tables
(and to x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

PRIMES = (1, 2654435761, 805459861)


@dataclass(frozen=True, kw_only=True)
class HashGridConfig:
    """Sizes of a hash grid (paper preset: 16 levels × 2 features, 2^16 entries, base 16).

    The defaults are the one place for the paper's grid; ``FieldConfig`` takes its own from here.
    The finest resolution is over the whole scene box: the official 2048 per unit of half-size
    (tcnn's ``desired_resolution = 2048 · bound``) times the box half-size 1.5.
    """

    n_levels: int = 16
    features_per_level: int = 2
    log2_table_size: int = 16
    base_resolution: int = 16
    finest_resolution: int = 3072

    @property
    def growth(self) -> float:
        """Per-level scale b."""
        if self.n_levels == 1:
            return 1.0
        return math.exp((math.log(self.finest_resolution) - math.log(self.base_resolution)) / (self.n_levels - 1))

    def resolutions(self) -> list[int]:
        """N_l for every level."""
        return [int(math.floor(self.base_resolution * self.growth**lvl)) for lvl in range(self.n_levels)]

    @property
    def output_dim(self) -> int:
        return self.n_levels * self.features_per_level




class TorchHashGrid(nn.Module):
    """Hash encoding of points (P, 3) in [0, 1]³ -> features (P, L·F), any device."""

    def __init__(self, config: HashGridConfig = HashGridConfig(), init_scale: float = 1e-4):
        super().__init__()
        self.config = config
        T = 2**config.log2_table_size
        self.res = config.resolutions()
        self.sizes = [min(T, (r + 1) ** 3) for r in self.res]
        self.tables = nn.Parameter(
            (torch.rand(sum(self.sizes), config.features_per_level) * 2 - 1) * init_scale)
        self.register_buffer("offsets", torch.tensor([0] + self.sizes).cumsum(0)[:-1], persistent=False)

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    def forward(self, x: Tensor) -> Tensor:
        # Per level: the two vertex coordinates and weights per axis (P, 3, 2), combined by
        # broadcasting into the 8 corners (P, 2, 2, 2): 4x fewer index and weight operations
        # than building (P, 8, 3) corners. Indices as the module docstring says (tables are 2^k
        # long, so "mod T" is "& (T − 1)").
        x = x.clamp(0.0, 1.0)
        T = 2**self.config.log2_table_size
        P = x.shape[0]
        feats = []
        for lvl, res in enumerate(self.res):
            pos = x * res
            base = pos.floor().clamp(0, res - 1)
            frac = pos - base  # (P, 3) in [0, 1]
            b = base.long()
            c = torch.stack([b, b + 1], dim=-1)  # (P, 3, 2) vertex coordinates per axis
            w = torch.stack([1 - frac, frac], dim=-1)  # (P, 3, 2) weights per axis
            if (res + 1) ** 3 <= T:
                s = res + 1
                ix, iy, iz = c[:, 0], c[:, 1] * s, c[:, 2] * (s * s)
                idx = ix[:, :, None, None] + iy[:, None, :, None] + iz[:, None, None, :]
            else:
                ix, iy, iz = c[:, 0] * PRIMES[0], c[:, 1] * PRIMES[1], c[:, 2] * PRIMES[2]
                idx = (ix[:, :, None, None] ^ iy[:, None, :, None] ^ iz[:, None, None, :]) & (T - 1)
            wc = w[:, 0, :, None, None] * w[:, 1, None, :, None] * w[:, 2, None, None, :]  # (P, 2, 2, 2)
            f = self.tables.index_select(0, (idx.reshape(P, 8) + self.offsets[lvl]).reshape(-1))
            feats.append((f.reshape(P, 8, -1) * wc.reshape(P, 8, 1)).sum(1))  # (P, F)
        return torch.cat(feats, dim=-1)


def tcnn_available() -> bool:
    """Whether tiny-cuda-nn is importable and CUDA is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import tinycudann  # noqa: F401
    except ImportError:
        return False
    return True


class TcnnHashGrid(nn.Module):
    """The same structure through tiny-cuda-nn (CUDA only; fp16 tables, fused kernels).

    tiny-cuda-nn aligns vertices as x·(N_min·b^l − 1) + 0.5, so its tables are not
    interchangeable with :class:`TorchHashGrid`'s; fields are trained with one backend.
    """

    def __init__(self, config: HashGridConfig = HashGridConfig()):
        super().__init__()
        import tinycudann as tcnn

        self.config = config
        self.encoding = tcnn.Encoding(3, {
            "otype": "HashGrid", "n_levels": config.n_levels, "n_features_per_level": config.features_per_level,
            "log2_hashmap_size": config.log2_table_size, "base_resolution": config.base_resolution,
            "per_level_scale": config.growth,
        })

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.encoding(x.clamp(0.0, 1.0)).float()

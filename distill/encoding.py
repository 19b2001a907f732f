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
from torch.autograd.function import once_differentiable

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


def _level_corners(xt: Tensor, res: int, T: int) -> tuple[Tensor, Tensor]:
    """One level's 8 corner indices (8·P,) and per-axis trilinear weights (3, 2, P).

    Corner-major layout: every tensor holds rows of P contiguous values, so each op is a plain
    vector op (a trailing size-2 or size-8 dimension makes CPU kernels several times slower).
    Corner k = 4i + 2j + l is vertex (x + i, y + j, z + l).
    """
    pos = xt * res  # (3, P)
    base = pos.floor().clamp_(0, res - 1)
    frac = pos - base
    b = base.long()
    if (res + 1) ** 3 <= T:  # directly indexed
        s = res + 1
        cx = torch.stack([b[0], b[0] + 1])
        cy = torch.stack([b[1], b[1] + 1]) * s
        cz = torch.stack([b[2], b[2] + 1]) * (s * s)
        idx = cx[:, None, None] + cy[None, :, None] + cz[None, None, :]  # (2, 2, 2, P)
    else:  # spatially hashed; tables are 2^k long, so "mod T" is "& (T − 1)"
        cx = torch.stack([b[0], b[0] + 1]) * PRIMES[0]
        cy = torch.stack([b[1], b[1] + 1]) * PRIMES[1]
        cz = torch.stack([b[2], b[2] + 1]) * PRIMES[2]
        idx = (cx[:, None, None] ^ cy[None, :, None] ^ cz[None, None, :]) & (T - 1)
    w = torch.stack([1 - frac, frac], dim=1)  # (3, 2, P)
    return idx.reshape(-1), w


def _corner_weights(w: Tensor) -> Tensor:
    """Trilinear weights (8, P) from per-axis weights (3, 2, P)."""
    return (w[0][:, None, None] * w[1][None, :, None] * w[2][None, None, :]).reshape(8, -1)


def _fraction_gradient(g_w: Tensor, w: Tensor) -> Tensor:
    """∂L/∂frac (3, P) from ∂L/∂(corner weight) (2, 2, 2, P) and per-axis weights (3, 2, P)."""
    wx, wy, wz = w
    return torch.stack([
        ((g_w[1] - g_w[0]) * (wy[:, None] * wz[None, :])).sum((0, 1)),
        ((g_w[:, 1] - g_w[:, 0]) * (wx[:, None] * wz[None, :])).sum((0, 1)),
        ((g_w[:, :, 1] - g_w[:, :, 0]) * (wx[:, None] * wy[None, :])).sum((0, 1)),
    ])


class _HashEncode(torch.autograd.Function):
    """Forward and backward of the encoding, written out.

    The backward adds every level's corner gradients into one zero table with ``index_add_``:
    autograd's ``index_select`` backward would build a table-sized zero gradient per level and
    sum them. The gradient to the points (needed only when they require it) follows from the
    trilinear weights: ∂w/∂frac is ±1 times the other two axes' weights, and ∂frac/∂x = N_l.
    """

    @staticmethod
    def forward(ctx, tables: Tensor, x: Tensor, res: tuple[int, ...], sizes: tuple[int, ...], T: int) -> Tensor:
        F, P = tables.shape[1], x.shape[0]
        inside = ((x >= 0) & (x <= 1)) if x.requires_grad else None  # (P, 3): where the clamp passes gradients
        xt = x.clamp(0.0, 1.0).t().contiguous()  # (3, P)
        table = tables.t().contiguous()  # (F, ΣT_l)
        out = tables.new_empty(len(res) * F, P)
        levels, start = [], 0
        for lvl, (r, size) in enumerate(zip(res, sizes)):
            idx, w = _level_corners(xt, r, T)
            f = table[:, start:start + size].index_select(1, idx).view(F, 8, P)
            torch.sum(f * _corner_weights(w), 1, out=out[lvl * F:(lvl + 1) * F])
            levels.append((idx, w, start, size))
            start += size
        ctx.levels, ctx.res = levels, res
        ctx.save_for_backward(table, inside)
        return out.t()  # (P, L·F), level-major

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        table, inside = ctx.saved_tensors
        F = table.shape[0]
        g_all = grad.t().contiguous()  # (L·F, P)
        g_table = torch.zeros_like(table) if ctx.needs_input_grad[0] else None
        g_frac = [] if ctx.needs_input_grad[1] else None
        for lvl, (idx, w, start, size) in enumerate(ctx.levels):
            g = g_all[lvl * F:(lvl + 1) * F]  # (F, P)
            if g_table is not None:
                g_corner = g[:, None, :] * _corner_weights(w)  # (F, 8, P)
                g_table[:, start:start + size].index_add_(1, idx, g_corner.view(F, -1))
            if g_frac is not None:
                f = table[:, start:start + size].index_select(1, idx).view(F, 8, -1)
                g_w = (g[:, None, :] * f).sum(0).view(2, 2, 2, -1)  # ∂L/∂(corner weight), (2, 2, 2, P)
                g_frac.append(_fraction_gradient(g_w, w) * ctx.res[lvl])
        g_x = (torch.stack(g_frac).sum(0).t() * inside) if g_frac is not None else None
        return (g_table.t() if g_table is not None else None), g_x, None, None, None


def hash_encode(tables: Tensor, x: Tensor, res: tuple[int, ...], sizes: tuple[int, ...], T: int) -> Tensor:
    """Features (P, L·F) of points x (P, 3) in [0, 1]³ from the stacked level tables (ΣT_l, F)."""
    return _HashEncode.apply(tables, x, tuple(res), tuple(sizes), T)


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

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    def forward(self, x: Tensor) -> Tensor:
        return hash_encode(self.tables, x, self.res, self.sizes, 2**self.config.log2_table_size)


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

"""The instance radiance field: hash grid + small MLP, density blob at the centre, no view dependence.

σ = trunc_exp(h₀ + 5·exp(−‖x‖² / (2·0.2²))) (an initial density at the object centre);
colour = sigmoid(h₁…₃). Points live in the normalised scene box [−h, h]³.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from scenes.render import BOX_HALF_SIZE

from .encoding import HashGridConfig, TcnnHashGrid, TorchHashGrid, tcnn_available


class _TruncExp(torch.autograd.Function):
    """exp(x) with the gradient's exponent clamped at 15 (keeps early steps finite)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(max=15))


def trunc_exp(x: Tensor) -> Tensor:
    """exp with a clamped gradient (torch-ngp's trunc_exp)."""
    return _TruncExp.apply(x)


def make_encoding(backend: str, config: HashGridConfig) -> nn.Module:
    """``torch``, ``tcnn``, or ``auto`` (tcnn when CUDA and tiny-cuda-nn are there)."""
    if backend == "auto":
        backend = "tcnn" if tcnn_available() else "torch"
    if backend == "tcnn":
        return TcnnHashGrid(config)
    if backend == "torch":
        return TorchHashGrid(config)
    raise ValueError(f"unknown encoding backend {backend!r} (torch, tcnn or auto)")


class InstanceField(nn.Module):
    """Points (P, 3) -> colour (P, 3) in [0, 1] and density (P,) ≥ 0."""

    def __init__(self, grid: HashGridConfig = HashGridConfig(), hidden: int = 64, layers: int = 3,
                 backend: str = "auto", half_size: float = BOX_HALF_SIZE, blob_density: float = 5.0,
                 blob_radius: float = 0.2):
        super().__init__()
        self.encoding = make_encoding(backend, grid)
        dims = [self.encoding.output_dim] + [hidden] * (layers - 1) + [4]
        mods: list[nn.Module] = []
        for i in range(len(dims) - 1):
            mods.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                mods.append(nn.ReLU())
        self.mlp = nn.Sequential(*mods)
        self.half_size, self.blob_density, self.blob_radius = half_size, blob_density, blob_radius

    def blob(self, x: Tensor) -> Tensor:
        """The initial density bump at the centre, (P,)."""
        return self.blob_density * torch.exp(-(x**2).sum(-1) / (2 * self.blob_radius**2))

    def forward(self, x: Tensor, directions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = self.mlp(self.encoding((x + self.half_size) / (2 * self.half_size)))
        sigma = trunc_exp(h[:, 0] + self.blob(x))
        return torch.sigmoid(h[:, 1:4]), sigma

"""The instance radiance field: hash grid + small MLP, density blob at the centre, no view dependence.

σ = trunc_exp(h₀ + 5·exp(−‖x‖² / (2·0.2²))) (an initial density at the object centre);
colour = sigmoid(h₁…₃). Points live in the normalised scene box [−h, h]³.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from scenes.render import BOX_HALF_SIZE

from .encoding import HashGridConfig, TcnnHashGrid, TorchHashGrid, tcnn_available

Backend = Literal["auto", "torch", "tcnn"]  # hash-grid implementations (auto: tcnn when CUDA and tiny-cuda-nn are there)
BACKENDS = get_args(Backend)


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
    raise ValueError(f"unknown encoding backend {backend!r} ({', '.join(BACKENDS)})")


class InstanceField(nn.Module):
    """Points (P, 3) -> colour (P, 3) in [0, 1] and density (P,) ≥ 0."""

    def __init__(self, *, grid: HashGridConfig = HashGridConfig(), hidden: int = 64, layers: int = 3,
                 backend: Backend = "auto", half_size: float = BOX_HALF_SIZE, blob_density: float = 5.0,
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

    def _raw(self, x: Tensor) -> Tensor:
        return self.mlp(self.encoding((x + self.half_size) / (2 * self.half_size)))  # (P, 4)

    def density(self, x: Tensor) -> Tensor:
        """Density (P,) at points (P, 3)."""
        return trunc_exp(self._raw(x)[:, 0] + self.blob(x))

    def forward(self, x: Tensor, directions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = self._raw(x)
        sigma = trunc_exp(h[:, 0] + self.blob(x))
        return torch.sigmoid(h[:, 1:4]), sigma


_FIELD_DEFAULTS = {k: p.default for k, p in inspect.signature(InstanceField.__init__).parameters.items()}


@dataclass
class FieldConfig:
    """Size and backend of an instance field (paper preset: 16 levels × 2, 2^16 entries, base 16).

    One name per hyperparameter along the chain: the grid fields are ``HashGridConfig``'s, the
    others ``InstanceField``'s keywords (``build`` passes each by name; a field of neither fails).
    """

    backend: Backend = "auto"
    """Hash-grid backend: torch (pure PyTorch), tcnn (tiny-cuda-nn, CUDA) or auto."""
    n_levels: int = HashGridConfig.n_levels
    """Hash-grid levels."""
    features_per_level: int = HashGridConfig.features_per_level
    """Features per level."""
    log2_table_size: int = HashGridConfig.log2_table_size
    """log2 of the entries per level's table."""
    base_resolution: int = HashGridConfig.base_resolution
    """Coarsest grid resolution over the scene box."""
    finest_resolution: int = HashGridConfig.finest_resolution
    """Finest grid resolution over the scene box (2048 × box half-size, as official)."""
    hidden: int = _FIELD_DEFAULTS["hidden"]
    """MLP width."""
    layers: int = _FIELD_DEFAULTS["layers"]
    """MLP layers."""

    def build(self) -> InstanceField:
        """A freshly initialised field of this size."""
        values = dataclasses.asdict(self)
        grid = HashGridConfig(**{f.name: values.pop(f.name) for f in dataclasses.fields(HashGridConfig)})
        return InstanceField(grid=grid, **values)

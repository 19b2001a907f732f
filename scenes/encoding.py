"""Encodings shared by the models: harmonic (NeRF) embeddings."""

from __future__ import annotations

import torch
from torch import Tensor


def harmonic_embedding(x: Tensor, n_freqs: int = 6, include_input: bool = True, omega0: float = 1.0) -> Tensor:
    """sin/cos of x·ω0·2^k, k = 0..n_freqs-1 (PyTorch3D's HarmonicEmbedding layout).

    x (..., D) -> (..., D·2·n_freqs [+ D]): [sin(x·f) for all f, cos(x·f) for all f, x].
    ``omega0`` is the lowest frequency (pixelNeRF's ``freq_factor``: 1.5).
    """
    freqs = omega0 * 2.0 ** torch.arange(n_freqs, device=x.device, dtype=x.dtype)
    xf = (x[..., None] * freqs).flatten(-2)  # (..., D·n_freqs)
    parts = [xf.sin(), xf.cos()] + ([x] if include_input else [])
    return torch.cat(parts, dim=-1)


def harmonic_dim(d_in: int, n_freqs: int = 6, include_input: bool = True) -> int:
    """Output width of :func:`harmonic_embedding`."""
    return d_in * (2 * n_freqs + int(include_input))

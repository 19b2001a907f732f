"""The torch hash encoding against a direct per-point reimplementation of the Instant-NGP formula."""

import math

import pytest
import torch

from distill.encoding import PRIMES, HashGridConfig, TorchHashGrid, hash_encode, tcnn_available

SMALL = HashGridConfig(n_levels=4, features_per_level=2, log2_table_size=9, base_resolution=4, finest_resolution=32)


def direct_encoding(tables, sizes, config, x):
    """One point at a time, one corner at a time, straight from the formula."""
    out = []
    T = 2**config.log2_table_size
    b = math.exp((math.log(config.finest_resolution) - math.log(config.base_resolution)) / (config.n_levels - 1))
    start = 0
    for lvl in range(config.n_levels):
        res = int(math.floor(config.base_resolution * b**lvl))
        table = tables[start:start + sizes[lvl]]
        start += sizes[lvl]
        feat = torch.zeros(config.features_per_level, dtype=tables.dtype)
        p = [float(x[i]) * res for i in range(3)]
        base = [min(max(int(math.floor(v)), 0), res - 1) for v in p]
        for dx in (0, 1):
            for dy in (0, 1):
                for dz in (0, 1):
                    c = (base[0] + dx, base[1] + dy, base[2] + dz)
                    w = 1.0
                    for d, o in zip(range(3), (dx, dy, dz)):
                        f = p[d] - base[d]
                        w *= f if o else 1 - f
                    if (res + 1) ** 3 <= T:
                        idx = c[0] + c[1] * (res + 1) + c[2] * (res + 1) ** 2
                    else:
                        idx = ((c[0] * PRIMES[0]) ^ (c[1] * PRIMES[1]) ^ (c[2] * PRIMES[2])) % T
                    feat = feat + w * table[idx]
        out.append(feat)
    return torch.cat(out)


def test_levels_mix_dense_and_hashed_tables():
    enc = TorchHashGrid(SMALL)
    assert enc.res == [4, 8, 16, 32]
    assert enc.sizes == [125, 512, 512, 512]  # 5³ fits in 2^9, the finer levels are hashed


def test_values_and_gradients_match_the_direct_formula():
    torch.manual_seed(0)
    enc = TorchHashGrid(SMALL, init_scale=1.0).double()
    x = torch.rand(7, 3, dtype=torch.float64)
    x[0] = torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64)  # corners of the box too
    fast = enc(x)
    slow = torch.stack([direct_encoding(enc.tables, enc.sizes, SMALL, xi) for xi in x])
    torch.testing.assert_close(fast, slow)
    w = torch.randn_like(fast)
    g_fast = torch.autograd.grad((fast * w).sum(), enc.tables)[0]
    slow = torch.stack([direct_encoding(enc.tables, enc.sizes, SMALL, xi) for xi in x])
    g_slow = torch.autograd.grad((slow * w).sum(), enc.tables)[0]
    torch.testing.assert_close(g_fast, g_slow)
    assert (g_fast != 0).sum() > 0


def test_gradients_to_tables_and_points_match_finite_differences():
    torch.manual_seed(1)
    enc = TorchHashGrid(SMALL, init_scale=1.0).double()
    x = torch.rand(5, 3, dtype=torch.float64).mul(0.9).add(0.05).requires_grad_()  # inside the box
    tables = enc.tables.detach().clone().requires_grad_()
    T = 2**SMALL.log2_table_size
    assert torch.autograd.gradcheck(lambda t, pts: hash_encode(t, pts, enc.res, enc.sizes, T), (tables, x))
    # points outside the box are clamped onto it, so their gradient is zero
    out = torch.tensor([[-0.2, 0.5, 0.5]], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(hash_encode(tables, out, enc.res, enc.sizes, T).sum(), out)
    assert g[0, 0] == 0 and g[0, 1:].abs().sum() > 0


def test_encoding_is_continuous_across_cells():
    enc = TorchHashGrid(SMALL, init_scale=1.0).double()
    x = torch.tensor([[0.25 - 1e-9, 0.3, 0.7], [0.25 + 1e-9, 0.3, 0.7]], dtype=torch.float64)
    out = enc(x)
    torch.testing.assert_close(out[0], out[1], atol=1e-6, rtol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not tcnn_available(), reason="needs CUDA and tiny-cuda-nn")
def test_tcnn_encoding_has_the_same_layout():
    from distill.encoding import TcnnHashGrid

    enc = TcnnHashGrid(SMALL).cuda()
    out = enc(torch.rand(100, 3, device="cuda"))
    assert out.shape == (100, SMALL.output_dim) and torch.isfinite(out).all()

"""Ray samplers: one interface; dense everywhere, occgrid where nerfacc's CUDA extension runs."""

import pytest
import torch

from distill.field import InstanceField
from distill.encoding import HashGridConfig
from distill.sampler import DenseSampler, SamplerConfig, make_sampler, occgrid_available
from scenes.render import render_rays

GRID = HashGridConfig(n_levels=4, log2_table_size=10, base_resolution=4, finest_resolution=32)


def _rays(n=64):
    g = torch.Generator().manual_seed(0)
    o = torch.tensor([0.0, 0.0, -3.0]).expand(n, 3).clone()
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g) * 0.2 + torch.tensor([0, 0, 1.0]), dim=-1)
    return o, d


def test_dense_sampler_is_render_rays_and_trains_only_the_final_pass():
    torch.manual_seed(0)
    field = InstanceField(grid=GRID, hidden=16, backend="torch")
    o, d = _rays()
    s = DenseSampler(SamplerConfig("dense", n_coarse=16, n_fine=8))
    out = s.render(field, o, d)
    ref = render_rays(field, o, d, 16, 8)
    torch.testing.assert_close(out.rgb, ref.rgb)
    assert out.weights.shape == (64, 16 + 8)  # the final render uses coarse + fine intervals
    out.rgb.sum().backward()
    assert field.encoding.tables.grad.abs().sum() > 0


def test_auto_is_dense_on_cpu_and_occgrid_falls_back_with_a_warning():
    assert isinstance(make_sampler(SamplerConfig("auto"), "cpu"), DenseSampler)
    with pytest.warns(UserWarning, match="occgrid needs CUDA"):
        import distill.sampler as sm

        sm._warned = False
        assert isinstance(make_sampler(SamplerConfig("occgrid"), "cpu"), DenseSampler)
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler(SamplerConfig("nope"), "cpu")


@pytest.mark.skipif(not occgrid_available(), reason="needs CUDA and nerfacc's CUDA extension")
def test_occgrid_matches_dense_on_a_solid_sphere():
    class Sphere(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def density(self, x):
            return torch.where(x.norm(dim=-1) < 0.5, 50.0, 0.0) + 0 * self.p

        def forward(self, x, d=None):
            return torch.full_like(x, 0.7), self.density(x)

    field = Sphere().cuda()
    o, d = (t.cuda() for t in _rays(256))
    occ = make_sampler(SamplerConfig("occgrid", grid_resolution=64, march_steps=1024), "cuda")
    for step in range(300):  # warm-up, then the grid marks the empty cells
        occ.update(field, step)
    dense = make_sampler(SamplerConfig("dense", n_coarse=128, n_fine=128), "cuda")
    a, b = occ.render(field, o, d), dense.render(field, o, d)
    assert (a.opacity - b.opacity).abs().mean() < 0.02
    hit = b.opacity[:, 0] > 0.99
    assert hit.any() and ((a.depth - b.depth)[hit].abs() < 0.02).all()


def test_marched_depth_is_normalised_once_where_opacity_is_below_one():
    """nerfacc's rendering already divides depth by opacity: the occgrid path must not divide again.

    Runs nerfacc's batched (CPU) path through the function the occgrid sampler composites with.
    """
    from distill.sampler import composite_marched

    edges = torch.linspace(2.0, 4.0, 33).expand(3, 33)  # 3 rays, 32 intervals
    t_starts, t_ends = edges[:, :-1].contiguous(), edges[:, 1:].contiguous()
    mids = (t_starts + t_ends) / 2
    slab = ((mids > 2.9) & (mids < 3.1)).float()  # a thin, semi-transparent slab around t = 3
    sigmas = slab * torch.tensor([[0.5], [2.0], [50.0]])  # opacity ≈ 0.05, 0.18, ≈ 1

    out = composite_marched(t_starts, t_ends, None, 3, lambda s, e, i: (torch.full((*s.shape, 3), 0.5), sigmas))
    assert out.opacity[0, 0] < 0.99 and out.opacity[1, 0] < 0.99
    weights = out.weights
    expected = (weights * mids).sum(-1, keepdim=True) / weights.sum(-1, keepdim=True)
    torch.testing.assert_close(out.depth, expected)
    assert ((out.depth - 3.0).abs() < 0.11).all()  # inside the slab, at every opacity


@pytest.mark.skipif(not occgrid_available(), reason="needs CUDA and nerfacc's CUDA extension")
def test_occgrid_depth_matches_dense_in_a_semi_transparent_sphere():
    class Haze(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def density(self, x):
            return torch.where(x.norm(dim=-1) < 0.5, 1.5, 0.0) + 0 * self.p

        def forward(self, x, d=None):
            return torch.full_like(x, 0.7), self.density(x)

    field = Haze().cuda()
    o, d = (t.cuda() for t in _rays(256))
    occ = make_sampler(SamplerConfig("occgrid", grid_resolution=64, march_steps=1024), "cuda")
    for step in range(300):
        occ.update(field, step)
    dense = make_sampler(SamplerConfig("dense", n_coarse=256, n_fine=0), "cuda")
    a, b = occ.render(field, o, d), dense.render(field, o, d)
    soft = (b.opacity[:, 0] > 0.2) & (b.opacity[:, 0] < 0.99)
    assert soft.any() and ((a.depth - b.depth)[soft].abs() < 0.03).all()

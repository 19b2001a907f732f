"""The instance field: density blob, colour range, gradients, rendering through the scenes primitives."""

import pytest
import torch

from distill.encoding import HashGridConfig
from distill.field import InstanceField, trunc_exp
from scenes.render import render_rays

SMALL = HashGridConfig(n_levels=4, features_per_level=2, log2_table_size=10, base_resolution=4, finest_resolution=32)


def test_initial_density_is_a_blob_at_the_centre():
    torch.manual_seed(0)
    f = InstanceField(grid=SMALL, hidden=16, backend="torch")
    rgb, sigma = f(torch.tensor([[0.0, 0, 0], [1.2, 0, 0]]))
    assert rgb.shape == (2, 3) and ((rgb > 0) & (rgb < 1)).all()
    assert sigma[0] > 20 * sigma[1]


def test_trunc_exp_gradient_is_clamped():
    x = torch.tensor([1.0, 30.0], requires_grad=True)
    trunc_exp(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.exp(torch.tensor([1.0, 15.0])))


def test_rendering_a_field_gives_gradients_to_the_tables():
    torch.manual_seed(0)
    f = InstanceField(grid=SMALL, hidden=16, backend="torch")
    o = torch.tensor([[0.0, 0.0, -3.0], [0.0, 2.5, -3.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    out = render_rays(f, o, d, n_coarse=16, n_fine=8)
    assert out.opacity[0] > out.opacity[1]  # the central ray crosses the blob
    out.rgb.sum().backward()
    assert f.encoding.tables.grad.abs().sum() > 0


def test_field_config_names_are_the_grid_and_field_keywords():
    """field.* keys -> HashGridConfig fields -> InstanceField keywords, one name each; built by keyword."""
    import dataclasses
    import inspect

    from distill.field import FieldConfig

    grid = {f.name for f in dataclasses.fields(HashGridConfig)}
    params = inspect.signature(InstanceField.__init__).parameters.values()
    keywords = {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    rest = {f.name for f in dataclasses.fields(FieldConfig)} - grid
    assert grid <= {f.name for f in dataclasses.fields(FieldConfig)} and rest <= keywords
    cfg = FieldConfig(backend="torch", n_levels=3, log2_table_size=8, finest_resolution=40, hidden=8, layers=2)
    f = cfg.build()
    assert f.encoding.config == HashGridConfig(n_levels=3, log2_table_size=8, finest_resolution=40)
    assert f.mlp[0].in_features == 3 * 2 and f.mlp[0].out_features == 8 and len(f.mlp) == 3
    with pytest.raises(TypeError):
        InstanceField(HashGridConfig())  # keyword-only


def test_the_default_field_is_the_default_field_config():
    """One paper grid: InstanceField(), FieldConfig().build() and HashGridConfig() agree, 2048 per unit half-size."""
    from distill.field import FieldConfig
    from scenes.render import BOX_HALF_SIZE

    built, plain = FieldConfig(backend="torch").build(), InstanceField(backend="torch")
    assert built.encoding.config == plain.encoding.config == HashGridConfig()
    assert HashGridConfig().finest_resolution == 2048 * BOX_HALF_SIZE
    assert [tuple(p.shape) for p in built.mlp.parameters()] == [tuple(p.shape) for p in plain.mlp.parameters()]

"""Photometric fitting: a field fitted to many views of the sphere scene renders held-out views."""

import torch
from conftest import write_sphere_dataset

from distill.encoding import HashGridConfig
from distill.field import InstanceField
from distill.photometric import PhotometricConfig, fit_photometric
from distill.render import render_views
from distill.sampler import DenseSampler, SamplerConfig
from pipelines.common.metrics import psnr
from scenes.co3d import CO3DDataset, CO3DOptions


def test_fit_improves_held_out_views(tmp_path):
    write_sphere_dataset(tmp_path, n_seq=1, n_frames=12, distance=5.0)
    ds = CO3DDataset(tmp_path, "toys")
    views = ds.load(ds.sequences("fewview_dev", "test")[0], CO3DOptions(crop=False, image_size=24))
    train, test = views.select(range(0, 12, 2)), views.select(range(1, 12, 2))
    torch.manual_seed(0)
    grid = HashGridConfig(n_levels=6, features_per_level=2, log2_table_size=12, base_resolution=4, finest_resolution=64)
    field = InstanceField(grid=grid, hidden=32, backend="torch")
    sampler = DenseSampler(SamplerConfig("dense", n_coarse=32, n_fine=16))
    before = psnr(render_views(field, test.cameras, sampler)[0], test.images).mean()
    cfg = PhotometricConfig(iters=150, rays=256, sampler=sampler.cfg, lr_grid=2e-2, lr_mlp=2e-3)
    losses = fit_photometric(field, train, cfg, progress=False)
    after = psnr(render_views(field, test.cameras, sampler)[0], test.images).mean()
    assert sum(losses[-10:]) < sum(losses[:10])
    assert after > before + 5 and after > 20, (before, after)

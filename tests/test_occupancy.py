"""The pure-PyTorch occupancy grid: nerfacc's update rule, and culling that changes nothing the object needs."""

import torch

from distill.encoding import HashGridConfig
from distill.field import InstanceField
from distill.occupancy import OccupancyGrid
from distill.sampler import DenseSampler, SamplerConfig
from pipelines.tools.bench_cameras import ring_cameras
from scenes.render import ray_box_intersect, render_rays, stratified_edges

GRID = HashGridConfig(n_levels=4, log2_table_size=10, base_resolution=4, finest_resolution=32)
RADIUS = 0.6


class Sphere(torch.nn.Module):
    """Density 30 inside a ball of radius 0.6 at the origin, exactly 0 outside; counts its queries."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.queried = 0

    def density(self, x):
        return torch.where(x.norm(dim=-1) < RADIUS, 30.0, 0.0) + 0 * self.p

    def forward(self, x, d=None):
        self.queried += x.shape[0]
        return torch.full_like(x, 0.7) + 0 * self.p, self.density(x)


def _camera_rays(size=24):
    o, d = ring_cameras(3, size, "cpu").rays()  # (3, size, size, 3)
    return o.reshape(-1, 3), d.reshape(-1, 3)


def test_update_follows_nerfaccs_rule():
    grid = OccupancyGrid(resolution=4, half_size=1.0, step_size=0.5, threshold=0.01, decay=0.5, every=4, warmup=8,
                         dilate=0)
    assert grid.binary.all()  # everything is occupied until the first update
    assert not grid.update(lambda x: torch.ones(x.shape[0]), step=3)  # not a multiple of every
    assert grid.update(lambda x: torch.where(x[:, 0] > 0, 2.0, 0.0), step=0)
    torch.testing.assert_close(grid.occupancy.reshape(4, 4, 4)[2:].flatten(), torch.ones(32))  # 2 · step 0.5
    assert grid.binary[2:].all() and not grid.binary[:2].any()
    grid.update(lambda x: torch.zeros(x.shape[0]), step=4)  # decays, max with the new 0
    torch.testing.assert_close(grid.occupancy.reshape(4, 4, 4)[2:].flatten(), torch.full((32,), 0.5))
    # a cell is occupied above min(mean occupancy, 0.01): 0.01 here (mean 0.0545) ...
    grid.occupancy.zero_()
    grid.update(lambda x: torch.where(x[:, 0] > 0, 0.2, 0.018), step=4)  # occupancies 0.1 and 0.009
    assert grid.binary[2:].all() and not grid.binary[:2].any()
    # ... and the mean (0.005) when that is lower
    grid.occupancy.zero_()
    grid.update(lambda x: torch.where(x[:, 0] > 0, 0.016, 0.004), step=4)  # occupancies 0.008 and 0.002
    assert grid.binary[2:].all() and not grid.binary[:2].any()
    # after the warm-up, a quarter of the cells drawn uniformly and a quarter among the occupied
    grid.occupancy.fill_(1.0)
    grid.update(lambda x: torch.zeros(x.shape[0]), step=8)
    assert 0 < (grid.occupancy < 1).sum() <= 32


def test_update_is_reproducible_and_leaves_the_global_stream_alone():
    def run():
        grid = OccupancyGrid(resolution=8, step_size=0.1, warmup=0)
        grid.update(lambda x: (x.norm(dim=-1) < 0.7).float() * 10, step=32)
        return grid.occupancy

    torch.manual_seed(0)
    a = run()
    after_a = torch.rand(1)
    torch.manual_seed(0)
    b = run()
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(after_a, torch.rand(1))


def test_nothing_the_object_needs_is_culled_and_the_render_is_unchanged():
    sphere = Sphere()
    o, d = _camera_rays()
    dense = render_rays(sphere, o, d, n_coarse=24, n_fine=24)
    dense_queries, sphere.queried = sphere.queried, 0
    sampler = DenseSampler(SamplerConfig("dense", n_coarse=24, n_fine=24, skip_resolution=32))
    sampler.update(sphere, 0)
    culled = sampler.render(sphere, o, d)
    # the silhouette is kept pixel for pixel and the colours and depths are the dense render's
    silhouette = dense.opacity[:, 0] > 0.5
    assert silhouette.sum() > 50
    assert (culled.opacity[:, 0] > 0.5).eq(silhouette).all()
    torch.testing.assert_close(culled.rgb, dense.rgb, atol=1e-5, rtol=0)
    torch.testing.assert_close(culled.opacity, dense.opacity, atol=1e-5, rtol=0)
    # and most of the queries were skipped
    assert sphere.queried < 0.4 * dense_queries
    assert 0.0 < sampler.grid.fraction_occupied < 0.15


def test_densities_equal_the_dense_paths_where_both_sample():
    torch.manual_seed(0)
    field = InstanceField(grid=GRID, hidden=16, backend="torch")
    o, d = _camera_rays(16)
    grid = OccupancyGrid(resolution=8, step_size=0.2)
    grid.binary = torch.rand(8, 8, 8, generator=torch.Generator().manual_seed(1)) < 0.5
    dense = render_rays(field, o, d, n_coarse=32)
    culled = render_rays(field, o, d, n_coarse=32, occupied=grid.occupied)
    near, far, _ = ray_box_intersect(o, d)
    edges = stratified_edges(near, far, 32, stratified=False)  # the same samples in both (no jitter)
    kept = grid.occupied((o[:, None] + d[:, None] * ((edges[:, :-1] + edges[:, 1:]) / 2)[..., None]).reshape(-1, 3))
    kept = kept.reshape(-1, 32)
    a_dense, t_dense = _alpha(dense.weights)
    a_culled, _ = _alpha(culled.weights)
    both = kept & (t_dense > 1e-3)  # alpha = w / T is well defined where light still arrives
    assert both.sum() > 100 and (~kept).sum() > 100
    torch.testing.assert_close(a_culled[both], a_dense[both], atol=1e-4, rtol=1e-3)
    assert (culled.weights[~kept] == 0).all()


def _alpha(weights):
    """Per-sample alpha and transmittance from compositing weights: α_i = w_i / T_i, T_i = 1 − Σ_{j<i} w_j."""
    transmittance = 1 - torch.cat([torch.zeros_like(weights[:, :1]), weights.cumsum(-1)[:, :-1]], dim=-1)
    return weights / transmittance.clamp_min(1e-10), transmittance


def test_the_grid_travels_with_the_sampler_state():
    sphere = Sphere()
    a = DenseSampler(SamplerConfig("dense", n_coarse=16, n_fine=0, skip_resolution=16))
    a.update(sphere, 0)
    b = DenseSampler(SamplerConfig("dense", n_coarse=16, n_fine=0, skip_resolution=16))
    assert b.grid.binary.all()
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.grid.binary, a.grid.binary) and not b.grid.binary.all()
    assert DenseSampler(SamplerConfig("dense", skip_empty=False)).state_dict() == {}


def test_dilation_keeps_the_neighbours_of_occupied_cells():
    grid = OccupancyGrid(resolution=8, half_size=1.0, step_size=1.0, dilate=1)
    grid.update(lambda x: ((x >= 0) & (x < 0.25)).all(-1).float(), step=0)  # density in cell (4, 4, 4) only
    occupied = grid.binary.nonzero()
    assert len(occupied) == 27 and occupied.amin(0).tolist() == [3, 3, 3] and occupied.amax(0).tolist() == [5, 5, 5]


def _sphere_masks(cams):
    """Masks (N, 1, H, W) of the ball: pixels whose ray through the pixel centre meets it."""
    o, d = cams.rays()  # (N, H, W, 3); rays through pixel centres
    b = (o * d).sum(-1)
    disc = b**2 - ((o**2).sum(-1) - RADIUS**2)
    return ((disc > 0) & (-b > 0)).float()[:, None]


def test_carving_keeps_every_point_of_the_object_and_drops_most_of_the_background():
    cams = ring_cameras(2, 32, "cpu")
    masks = _sphere_masks(cams)
    grid = OccupancyGrid(resolution=32)
    grid.carve(cams, masks)
    inside = torch.nn.functional.normalize(torch.randn(20000, 3), dim=-1) * RADIUS * torch.rand(20000, 1) ** (1 / 3)
    assert grid.occupied(inside).all()  # nothing the object needs is culled
    carved = 1 - grid.fraction_occupied
    assert carved > 0.15  # two views that see the box whole in places carve it there
    # a cell is carved only where some view saw its whole projection as background
    padded = OccupancyGrid(resolution=32)
    padded.carve(cams, masks, valid=torch.zeros_like(masks))  # nothing observed: nothing carved
    assert padded.binary.all()


def test_an_update_never_brings_back_a_carved_cell():
    cams = ring_cameras(2, 32, "cpu")
    grid = OccupancyGrid(resolution=16)
    grid.carve(cams, _sphere_masks(cams))
    hull = grid.binary.clone()
    grid.update(lambda x: torch.ones(x.shape[0]), step=0)  # density everywhere
    assert torch.equal(grid.binary, hull)

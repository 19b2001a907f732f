"""Rendering primitives: box intersection, samplers, compositing against references."""

import nerfacc
import torch

from scenes.render import (
    composite, importance_edges, ray_box_intersect, render_rays, sample_pdf, stratified_edges,
)


def test_ray_box_intersection_known_values():
    o = torch.tensor([[0.0, 0.0, -5.0], [0.0, 0.0, 0.0], [0.0, 3.0, -5.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    near, far, hit = ray_box_intersect(o, d, half_size=1.5)
    torch.testing.assert_close(near[:2], torch.tensor([3.5, 0.0]))
    torch.testing.assert_close(far[:2], torch.tensor([6.5, 1.5]))
    assert hit.tolist() == [True, True, False]
    assert far[2] == near[2]


def test_stratified_edges_are_sorted_and_span_near_far():
    near, far = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])
    g = torch.Generator().manual_seed(0)
    e = stratified_edges(near, far, 16, stratified=True, generator=g)
    assert e.shape == (2, 17)
    assert (e.diff(dim=-1) > 0).all()
    torch.testing.assert_close(e[:, 0], near)
    torch.testing.assert_close(e[:, -1], far)
    uniform = stratified_edges(near, far, 16, stratified=False)
    assert not torch.allclose(e, uniform)
    # every jittered edge stays within half a bin of its uniform position
    assert ((e - uniform).abs() <= (far - near)[:, None] / 32 + 1e-6).all()


def _reference_composite(rgbs, sigmas, edges):
    delta = edges[:, 1:] - edges[:, :-1]
    alpha = 1 - torch.exp(-sigmas * delta)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], -1), -1)
    w = alpha * trans
    mids = (edges[:, 1:] + edges[:, :-1]) / 2
    op = w.sum(-1, keepdim=True)
    return (w[..., None] * rgbs).sum(1), op, (w * mids).sum(-1, keepdim=True) / op, w


def test_composite_matches_direct_formula_and_nerfacc_rendering():
    g = torch.Generator().manual_seed(1)
    R, S = 7, 12
    edges = torch.sort(torch.rand(R, S + 1, generator=g) * 4, dim=-1).values
    rgbs, sigmas = torch.rand(R, S, 3, generator=g), torch.rand(R, S, generator=g) * 3
    out = composite(rgbs, sigmas, edges)
    rgb, op, depth, w = _reference_composite(rgbs, sigmas, edges)
    for a, b in ((out.rgb, rgb), (out.opacity, op), (out.depth, depth), (out.weights, w)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    c, o, d, _ = nerfacc.rendering(edges[:, :-1], edges[:, 1:], rgb_sigma_fn=lambda s, e, i: (rgbs, sigmas))
    torch.testing.assert_close(out.rgb, c)
    torch.testing.assert_close(out.depth, d)
    # white background fills the transparent part
    white = composite(rgbs, sigmas, edges, background=1.0)
    torch.testing.assert_close(white.rgb, rgb + (1 - op))


def test_composite_gradients_reach_density_and_colour():
    edges = torch.linspace(0, 1, 9).expand(3, -1)
    rgbs = torch.rand(3, 8, 3, requires_grad=True)
    sigmas = torch.rand(3, 8, requires_grad=True)
    composite(rgbs, sigmas, edges).rgb.sum().backward()
    assert rgbs.grad.abs().sum() > 0 and sigmas.grad.abs().sum() > 0


def test_importance_sampling_concentrates_where_the_weights_are():
    R, S = 4, 32
    edges = torch.linspace(0.0, 1.0, S + 1).expand(R, -1).contiguous()
    weights = torch.zeros(R, S)
    weights[:, 10:12] = 1.0  # all mass in [10/32, 12/32)
    t = sample_pdf(edges, weights, 64, stratified=True, generator=torch.Generator().manual_seed(0))
    inside = ((t >= 10 / 32) & (t <= 12 / 32)).float().mean()
    assert inside > 0.95
    merged = importance_edges(edges, weights, 64)
    assert merged.shape == (R, S + 65)
    assert (merged.diff(dim=-1) >= 0).all()


def test_render_rays_of_a_solid_sphere():
    def sphere(pts, dirs):
        inside = (pts.norm(dim=-1) < 0.5).float()
        return torch.ones_like(pts) * torch.tensor([1.0, 0.5, 0.0]), inside * 1e3

    o = torch.tensor([[0.0, 0.0, -3.0], [0.0, 1.0, -3.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    out = render_rays(sphere, o, d, n_coarse=64, n_fine=64)
    assert out.opacity[0].item() > 0.999 and out.opacity[1].item() < 1e-6
    assert abs(out.depth[0].item() - 2.5) < 0.03  # front surface at z = -0.5
    torch.testing.assert_close(out.rgb[0], torch.tensor([1.0, 0.5, 0.0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(out.rgb[1], torch.zeros(3))


def test_image_chunks_put_every_ray_at_its_pixel_whatever_the_chunk():
    from scenes.cameras import Cameras, intrinsics_from_fov
    from scenes.render import render_image_chunks

    g = torch.Generator().manual_seed(0)
    R = torch.linalg.qr(torch.randn(2, 3, 3, generator=g))[0]
    cams = Cameras(R, torch.randn(2, 3, generator=g), intrinsics_from_fov(40, 5, 7)[None].expand(2, 3, 3), 5, 7)
    o, d = cams.rays()  # (2, 5, 7, 3)
    fn = lambda o_, d_: {"d": d_, "sum": (o_ + d_).sum(-1, keepdim=True), "none": d_[:, :0]}  # noqa: E731
    whole = render_image_chunks(cams, fn, chunk=70)
    for chunk in (1, 13):
        parts = render_image_chunks(cams, fn, chunk=chunk)
        assert all(torch.equal(parts[k], whole[k]) for k in whole)
    assert torch.equal(whole["d"], d.permute(0, 3, 1, 2))  # (N, C, H, W), pixel (i, j) at [..., i, j]
    assert whole["sum"].shape == (2, 1, 5, 7) and whole["none"].shape == (2, 0, 5, 7)

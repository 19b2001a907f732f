"""The VLDM teacher: cached conditioning, bootstrap targets, multi-step denoising, evaluation counts."""

import torch

from test_eft import ring
from test_vldm import tiny_pipeline
from vldm.diffusion import denoise_from, make_scheduler
from vldm.teacher import VLDMTeacher


def test_one_step_denoise_is_the_x0_formula():
    sched = make_scheduler()

    class ConstUNet:
        def __call__(self, x, t):
            return type("O", (), {"sample": torch.full_like(x[:, :4], 0.5)})()

    x_t = torch.randn(2, 4, 8, 8)
    t = torch.tensor([300, 700])
    x0 = denoise_from(ConstUNet(), sched.alphas_cumprod, x_t, t, torch.zeros(2, 2, 8, 8), steps=1)
    a = sched.alphas_cumprod[t][:, None, None, None]
    torch.testing.assert_close(x0, (x_t - (1 - a).sqrt() * 0.5) / a.sqrt())


def test_multi_step_denoise_recovers_a_clean_latent_for_an_oracle():
    sched = make_scheduler()
    z0 = torch.randn(1, 4, 8, 8)
    noise = torch.randn(1, 4, 8, 8)
    t = torch.tensor([800])
    z_t = sched.add_noise(z0, noise, t)

    class Oracle:  # the ε that maps any x_t back to z0
        def __call__(self, x, tt):
            a = sched.alphas_cumprod[tt][:, None, None, None]
            return type("O", (), {"sample": (x[:, :4] - a.sqrt() * z0) / (1 - a).sqrt()})()

    out = denoise_from(Oracle(), sched.alphas_cumprod, z_t, t, torch.zeros(1, 2, 8, 8), steps=5)
    torch.testing.assert_close(out, z0, atol=1e-4, rtol=1e-4)


def test_teacher_targets_and_counts():
    pipe = tiny_pipeline()
    cams = ring(5, size=16)
    teacher = VLDMTeacher(pipe, torch.rand(2, 3, 16, 16), cams[[0, 1]], steps=3)
    teacher.prepare(cams[[2, 3, 4]])
    rgb, mask = teacher.bootstrap(torch.tensor([0, 2]))
    assert rgb.shape == (2, 3, 16, 16) and mask.shape == (2, 1, 16, 16)
    renders = torch.rand(2, 3, 16, 16, requires_grad=True)
    x0, w = teacher.denoise(renders, torch.tensor([1, 2]), torch.tensor([0.3, 0.9]),
                            generator=torch.Generator().manual_seed(0))
    assert x0.shape == (2, 3, 16, 16) and not x0.requires_grad
    assert w[1] > w[0] > 0  # more noise, larger weight 1 − ᾱ_t
    assert teacher.unet_evaluations == 3 * 2


def test_dpm_solver_recovers_the_oracle_latent_and_differs_from_ddim():
    sched = make_scheduler()
    z0 = torch.randn(1, 4, 8, 8)
    t = torch.tensor([700])
    z_t = sched.add_noise(z0, torch.randn(1, 4, 8, 8), t)

    class Oracle:
        def __call__(self, x, tt):
            a = sched.alphas_cumprod[tt][:, None, None, None]
            return type("O", (), {"sample": (x[:, :4] - a.sqrt() * z0) / (1 - a).sqrt()})()

    class Damped:  # a non-oracle ε: the solvers' extrapolations differ
        def __call__(self, x, tt):
            return type("O", (), {"sample": 0.5 * x[:, :4]})()

    cond = torch.zeros(1, 2, 8, 8)
    out = denoise_from(Oracle(), sched.alphas_cumprod, z_t, t, cond, steps=3, solver="dpm")
    torch.testing.assert_close(out, z0, atol=1e-4, rtol=1e-4)
    a = denoise_from(Damped(), sched.alphas_cumprod, z_t, t, cond, steps=3, solver="dpm")
    b = denoise_from(Damped(), sched.alphas_cumprod, z_t, t, cond, steps=3, solver="ddim")
    assert not torch.allclose(a, b)
    c = denoise_from(Damped(), sched.alphas_cumprod, z_t, t, cond, steps=1, solver="dpm")
    torch.testing.assert_close(c, denoise_from(Damped(), sched.alphas_cumprod, z_t, t, cond, steps=1))


def test_sds_gradient_is_weighted_noise_residual_through_the_encoder(monkeypatch):
    import vldm.teacher as vt
    from vldm.diffusion import guided_eps

    pipe = tiny_pipeline()
    cams = ring(4, size=16)
    teacher = VLDMTeacher(pipe, torch.rand(2, 3, 16, 16), cams[[0, 1]])
    teacher.prepare(cams[[2, 3]])
    z0 = torch.randn(1, 4, 8, 8, requires_grad=True)
    monkeypatch.setattr(vt, "encode", lambda vae, images: z0 * images.mean() / images.mean().detach())
    images = torch.rand(1, 3, 16, 16, requires_grad=True)
    index, t = torch.tensor([1]), torch.tensor([0.6])
    loss = teacher.sds_loss(images, index, t, torch.Generator().manual_seed(3))
    (grad_z,) = torch.autograd.grad(loss, z0, retain_graph=True)
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(3))
    ti = vt.timestep_index(t, 1000)
    z_t = pipe.scheduler.add_noise(z0.detach(), noise, ti)
    eps = guided_eps(pipe.unet, z_t, ti, teacher.conditioning(index)[0])
    w = 1 - pipe.scheduler.alphas_cumprod[ti]
    torch.testing.assert_close(grad_z, w * (eps - noise) / (8 * 8), atol=1e-6, rtol=1e-4)
    assert torch.autograd.grad(loss, images)[0].abs().sum() > 0  # reaches the renders
    assert teacher.unet_evaluations == 1


class _TimeEps:
    """A UNet whose ε depends on the timestep only (and counts its calls)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, tt):
        self.calls += 1
        return type("O", (), {"sample": (0.2 + tt.float() / 1000)[:, None, None, None].expand_as(x[:, :4]).clone()})()


def test_official_step_schedule_is_min_of_100t_and_50():
    teacher = VLDMTeacher(tiny_pipeline(), torch.rand(2, 3, 16, 16), ring(2, size=16), steps=50,
                          solver="plms-stochastic", steps_per_t=100)
    t = torch.tensor([0.005, 0.3, 0.425, 0.77, 0.99])
    assert teacher.steps_for(t).tolist() == [0, 30, 42, 50, 50]
    fixed = VLDMTeacher(tiny_pipeline(), torch.rand(2, 3, 16, 16), ring(2, size=16), steps=5)
    assert fixed.steps_for(t).tolist() == [5] * 5


def test_stochastic_plms_one_step_is_the_posterior_mean_after_an_euler_average():
    from vldm.solvers import stochastic_plms_from

    a = make_scheduler().alphas_cumprod
    x_t = torch.randn(1, 4, 8, 8)
    t = torch.tensor([600])
    out = stochastic_plms_from(_TimeEps(), a, x_t, t, torch.zeros(1, 2, 8, 8), steps=1)
    eps = ((0.2 + 0.6) + (0.2 + 0.0)) / 2  # ε at t = 600 and at the Euler step's level t = 0, averaged
    x0 = (x_t - (1 - a[600]).sqrt() * eps) / a[600].sqrt()
    c = 1 - (a[600] / (1 - a[600])) / (a[0] / (1 - a[0]))
    torch.testing.assert_close(out, a[0].sqrt() * ((1 - c) * x_t / a[600].sqrt() + c * x0))


def test_stochastic_plms_costs_steps_plus_one_clips_and_is_seeded():
    from vldm.solvers import stochastic_plms_calls, stochastic_plms_from

    a = make_scheduler().alphas_cumprod
    x_t, t, cond = torch.randn(2, 4, 8, 8), torch.tensor([500, 900]), torch.zeros(2, 2, 8, 8)
    unet = _TimeEps()
    run = lambda seed: stochastic_plms_from(unet, a, x_t, t, cond, 4, generator=torch.Generator().manual_seed(seed))
    first = run(0)
    assert unet.calls == stochastic_plms_calls(4) == 5
    torch.testing.assert_close(run(0), first)
    assert not torch.allclose(run(1), first)  # noise is added between steps
    assert first.abs().max() <= 10.0  # x̂0 clipped to ±10
    assert torch.equal(stochastic_plms_from(unet, a, x_t, t, cond, 0), x_t)  # below t = 0.01: the noisy latent


def test_stochastic_plms_two_steps_add_posterior_noise_and_use_adams_bashforth():
    """Step 1: Euler-averaged ε, then a posterior *sample*; step 2: ε' = (3ε − ε_prev)/2, posterior mean."""
    from vldm.solvers import stochastic_plms_from

    a = make_scheduler().alphas_cumprod
    x = torch.randn(1, 4, 8, 8)
    out = stochastic_plms_from(_TimeEps(), a, x, torch.tensor([600]), torch.zeros(1, 2, 8, 8), steps=2,
                               generator=torch.Generator().manual_seed(4))  # grid 600 -> 300 -> 0

    def posterior(x, eps, t, tn):  # mean and standard deviation of q(x_tn | x_t, x̂0(ε))
        x0 = (x - (1 - a[t]).sqrt() * eps) / a[t].sqrt()
        c = 1 - (a[t] / (1 - a[t])) / (a[tn] / (1 - a[tn]))
        return a[tn].sqrt() * ((1 - c) * x / a[t].sqrt() + c * x0), ((1 - a[tn]) * c).sqrt()

    g = torch.Generator().manual_seed(4)
    torch.randn(x.shape, generator=g)  # the Euler step's own sample (its ε at t = 300 does not depend on x)
    mean, std = posterior(x, (0.8 + 0.5) / 2, 600, 300)
    x1 = mean + std * torch.randn(x.shape, generator=g)
    expected, _ = posterior(x1, (3 * 0.5 - 0.8) / 2, 300, 0)
    torch.testing.assert_close(out, expected)


def test_teacher_counts_the_official_schedule_per_sample():
    pipe = tiny_pipeline()
    cams = ring(4, size=16)
    teacher = VLDMTeacher(pipe, torch.rand(2, 3, 16, 16), cams[[0, 1]], steps=50, solver="plms-stochastic",
                          steps_per_t=100)
    teacher.prepare(cams[[2, 3]])
    x0, w = teacher.denoise(torch.rand(2, 3, 16, 16), torch.tensor([0, 1]), torch.tensor([0.005, 0.031]),
                            generator=torch.Generator().manual_seed(0))
    assert x0.shape == (2, 3, 16, 16) and torch.isfinite(x0).all()
    assert teacher.unet_evaluations == 0 + (3 + 1)  # no step below t = 0.01; 3 steps + the Euler call at 0.031


def test_expected_calls_of_the_official_schedule():
    """t ~ U(0, 0.99): n = int(100t) is uniform on 0..98, steps = min(n, 50), calls = steps + 1 (0 for n = 0)."""
    teacher = VLDMTeacher(tiny_pipeline(), torch.rand(2, 3, 16, 16), ring(2, size=16), steps=50,
                          solver="plms-stochastic", steps_per_t=100)
    exact = (sum(n + 1 for n in range(1, 50)) + 49 * 51) / 99  # 38.11 per target, ≈ 76,000 per 2000 targets
    assert abs(teacher.expected_unet_calls(0.0, 0.99) - exact) < 1e-3


def test_conditioning_is_computed_once_per_drawn_camera_and_equals_the_eager_eft():
    pipe = tiny_pipeline()
    cams = ring(6, size=16)
    ctx = torch.rand(2, 3, 16, 16)
    teacher = VLDMTeacher(pipe, ctx, cams[[0, 1]])
    teacher.prepare(cams[[2, 3, 4, 5]])
    assert teacher.eft_queries == 0  # nothing runs before a camera is drawn
    feats, rgb = teacher.conditioning(torch.tensor([3, 1]))
    assert teacher.eft_queries == 2
    feats2, _ = teacher.conditioning(torch.tensor([1, 3, 1]))
    assert teacher.eft_queries == 2  # cached
    with torch.no_grad():
        eager_feats, eager_rgb = pipe.condition(ctx, cams[[0, 1]], cams[[2, 3, 4, 5]])
    torch.testing.assert_close(feats, eager_feats[[3, 1]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rgb, eager_rgb[[3, 1]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feats2, eager_feats[[1, 3, 1]], atol=1e-5, rtol=1e-5)

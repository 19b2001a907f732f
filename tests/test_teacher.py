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

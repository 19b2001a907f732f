"""The VLDM pipeline: sampling with every sampler, guidance, loss masking, save -> load identity."""

import math

import pytest
import torch
from diffusers import AutoencoderKL

from test_eft import TINY, ring
from vldm.diffusion import diffusion_loss, make_scheduler, make_unet, p2_weight, solver_from
from vldm.eft import EpipolarFeatureTransformer
from vldm.pipeline import VLDMPipeline


def tiny_pipeline(seed=0) -> VLDMPipeline:
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1, sample_size=16)
    unet = make_unet(8, 4, TINY["d_model"], block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, attention_head_dim=8)
    pipe = VLDMPipeline(EpipolarFeatureTransformer(**TINY), vae, unet, make_scheduler()).to("cpu")
    for m in (pipe.eft, pipe.vae, pipe.unet):
        m.eval()  # as from_pretrained leaves them (BatchNorm uses running statistics)
    return pipe


def tiny_model_and_sphere(tmp_path_factory, n_seq: int):
    """A saved tiny VLDM folder and a sphere dataset of ``n_seq`` sequences × 6 frames: (folder, root)."""
    from conftest import write_sphere_dataset

    folder = tmp_path_factory.mktemp("vldm")
    tiny_pipeline().save_pretrained(folder / "model")
    root = tmp_path_factory.mktemp("data")
    write_sphere_dataset(root, n_seq=n_seq, n_frames=6)
    return folder, root


@pytest.mark.parametrize("solver", ["ddim", "plms", "dpm", "ddpm"])
def test_sampling_shapes_and_seed(solver):
    pipe = tiny_pipeline()
    cams = ring(4, size=16)
    imgs = torch.rand(2, 3, 16, 16)
    run = lambda seed: pipe(imgs, cams[[0, 1]], cams[[2, 3]], num_inference_steps=3, solver=solver,
                            generator=torch.Generator().manual_seed(seed))
    a, b, c = run(0), run(0), run(1)
    assert a.images.shape == (2, 3, 16, 16) and a.eft_rgb.shape == (2, 3, 16, 16)
    assert a.latents.shape == (2, 4, 8, 8)
    torch.testing.assert_close(a.images, b.images)
    assert not torch.allclose(a.images, c.images)


def test_guidance_changes_samples():
    pipe = tiny_pipeline()
    cams = ring(3, size=16)
    imgs = torch.rand(2, 3, 16, 16)
    g = lambda: torch.Generator().manual_seed(0)
    a = pipe(imgs, cams[[0, 1]], cams[[2]], num_inference_steps=2, generator=g(), guidance_scale=1.0)
    b = pipe(imgs, cams[[0, 1]], cams[[2]], num_inference_steps=2, generator=g(), guidance_scale=3.0)
    assert not torch.allclose(a.latents, b.latents)


def test_save_load_round_trip_gives_identical_samples(tmp_path):
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "model")
    back = VLDMPipeline.from_pretrained(tmp_path / "model")
    cams = ring(3, size=16)
    imgs = torch.rand(2, 3, 16, 16)
    kw = dict(num_inference_steps=3, solver="ddim")
    a = pipe(imgs, cams[[0, 1]], cams[[2]], generator=torch.Generator().manual_seed(5), **kw)
    b = back(imgs, cams[[0, 1]], cams[[2]], generator=torch.Generator().manual_seed(5), **kw)
    # identical up to float rounding (reloaded weights may take other kernel paths)
    torch.testing.assert_close(a.images, b.images, atol=1e-5, rtol=0)
    assert not torch.allclose(a.images, back(imgs, cams[[0, 1]], cams[[2]], generator=torch.Generator().manual_seed(6), **kw).images)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["eft", "model_index.json", "scheduler", "unet", "vae"]


def test_diffusion_loss_is_the_valid_region_mean_of_the_noise_error():
    class ZeroUNet:  # predicts ε = 0, so the loss is the masked mean of noise²
        def __call__(self, x, t):
            return type("Out", (), {"sample": torch.zeros(x.shape[0], 4, *x.shape[2:])})()

    sched = make_scheduler()
    lat, cond = torch.randn(2, 4, 8, 8), torch.randn(2, 2, 8, 8)
    valid = torch.zeros(2, 1, 8, 8)
    valid[..., :3, :] = 1
    loss = diffusion_loss(ZeroUNet(), sched, lat, cond, valid, repeats=3, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    torch.randint(0, 1000, (6,), generator=g)  # the timesteps
    noise = torch.randn(6, 4, 8, 8, generator=g)
    expected = (noise[..., :3, :] ** 2).mean()
    torch.testing.assert_close(loss, expected)


def _cosine_alpha_bar(t: int, T: int = 1000, s: float = 0.008) -> float:
    """ᾱ_t of the capped cosine schedule from its definition: ∏ (1 − β_i), β_i = min(1 − f(i+1)/f(i), 0.999)."""
    f = lambda i: math.cos((i / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return math.prod(1 - min(1 - f(i + 1) / f(i), 0.999) for i in range(t + 1))


def test_p2_weight_at_the_ends_of_the_schedule():
    a = make_scheduler().alphas_cumprod
    for t in (0, 999):
        ab = _cosine_alpha_bar(t)
        expected = (1 + ab / (1 - ab)) ** -0.5  # (k + SNR)^−γ, k = 1, γ = 0.5
        torch.testing.assert_close(p2_weight(a[t], 0.5, 1.0), torch.tensor(expected), rtol=1e-3, atol=0)
    assert 0.006 < p2_weight(a[0]).item() < 0.007  # low noise barely counts ...
    assert p2_weight(a[999]).item() > 0.999  # ... pure noise counts fully
    assert p2_weight(a[[0, 999]], gamma=0.0).tolist() == [1.0, 1.0]
    torch.testing.assert_close(p2_weight(a[500], 1.0, 2.0), 1 / (2 + a[500] / (1 - a[500])))


def test_diffusion_loss_weights_each_repeat_by_its_p2_weight():
    class ZeroUNet:
        def __call__(self, x, t):
            return type("Out", (), {"sample": torch.zeros(x.shape[0], 4, *x.shape[2:])})()

    sched = make_scheduler()
    lat, cond = torch.randn(2, 4, 8, 8), torch.randn(2, 2, 8, 8)
    valid = torch.ones(2, 1, 8, 8)
    loss = diffusion_loss(ZeroUNet(), sched, lat, cond, valid, repeats=3, p2_gamma=0.5,
                          generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, 1000, (6,), generator=g)
    noise = torch.randn(6, 4, 8, 8, generator=g)
    w = (1 - sched.alphas_cumprod[t]).sqrt()  # (1 + SNR)^−½ = √(1 − ᾱ)
    torch.testing.assert_close(loss, (w[:, None, None, None] * noise ** 2).mean())


def test_solver_configs_share_the_training_schedule():
    sched = make_scheduler()
    for name in ("ddim", "plms", "dpm"):
        s = solver_from(sched, name)
        assert s.config.beta_schedule == "squaredcos_cap_v2" and s.config.prediction_type == "epsilon"


@pytest.mark.parametrize("name", ["ddim", "plms", "dpm", "ddpm"])
@pytest.mark.parametrize("steps", [3, 25, 50, 500])
def test_every_solver_starts_at_the_last_training_timestep(name, steps):
    """Trailing spacing: sampling starts from pure noise at t = 999 (leading would start at 1000 − 1000/steps)."""
    s = solver_from(make_scheduler(), name)
    s.set_timesteps(steps)
    assert int(s.timesteps[0]) == 999
    assert int(s.timesteps.min()) >= 0 and len(set(s.timesteps.tolist())) >= min(steps, 999) - 1


def test_clipped_ancestral_solver_clips_the_predicted_x0():
    s = solver_from(make_scheduler(), "ddpm", clip_x0=10.0)
    s.set_timesteps(500)
    x = torch.zeros(1, 4, 2, 2)
    t = s.timesteps[0]
    out = s.step(torch.full_like(x, -1e3), t, x, generator=torch.Generator().manual_seed(0))
    assert out.pred_original_sample.abs().max() <= 10.0


def test_sampling_from_t999_clips_x0_by_default():
    """At t = 999 the cosine schedule's ᾱ is ~2e-9: x̂0 must be clipped or an ε error explodes (the default clip)."""
    import inspect

    from vldm.diffusion import SAMPLE_CLIP_X0, make_scheduler, solver_from
    from vldm.pipeline import VLDMPipeline

    assert make_scheduler().alphas_cumprod[999] < 1e-8
    assert inspect.signature(VLDMPipeline.__call__).parameters["clip_x0"].default == SAMPLE_CLIP_X0
    ddim = solver_from(make_scheduler(), "ddim", SAMPLE_CLIP_X0)
    ddim.set_timesteps(25)
    x = torch.zeros(1, 4, 2, 2)
    eps = torch.full_like(x, -0.01)  # a tiny ε error at the first step
    out = ddim.step(eps, ddim.timesteps[0], x).pred_original_sample
    assert out.abs().max() <= SAMPLE_CLIP_X0 + 1e-6  # unclipped it would be ~0.01 / 5e-5 = 200

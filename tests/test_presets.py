"""The reconstruct presets: `paper` is the official recipe value for value; demo and fast keep their schedules."""

from test_reconstruct import model_and_data  # noqa: F401 (fixture)

from pipelines.common.config import load_config, preset_path
from pipelines.reconstruction.fit import FitSceneConfig


def _preset(name: str) -> FitSceneConfig:
    return load_config(FitSceneConfig, preset_path("reconstruct", name))


def test_paper_preset_is_the_published_recipe():
    cfg = _preset("paper")
    d, t = cfg.distill, cfg.teacher
    assert (d.iters, d.bootstrap_iters, d.render_scale, d.perceptual_weight) == (3000, 1000, 0.5, 0.1)
    assert (d.t_min, d.t_max, d.fusion_opacity_weight, d.opacity_weight) == (0.0, 0.99, 1e-3, 1e-3)
    assert (t.solver, t.steps, t.steps_per_t, t.guidance_scale) == ("plms-stochastic", 50, 100, 1.0)
    assert (cfg.circle_views, cfg.circle_fit, cfg.circle_jitter) == (50, "all", 0.17)
    assert (d.sampler.name, d.sampler.n_coarse, d.sampler.n_fine) == ("dense", 64, 64)  # never `auto`: no occgrid
    assert cfg.field.backend == "torch" and (d.lr_grid, d.lr_mlp) == (5e-3, 5e-4)


def test_demo_and_fast_keep_their_deterministic_few_step_targets():
    for name, solver, steps in (("demo", "ddim", 5), ("fast", "dpm", 2)):
        cfg = _preset(name)
        assert (cfg.teacher.solver, cfg.teacher.steps, cfg.teacher.steps_per_t) == (solver, steps, 0.0)
        assert (cfg.distill.t_min, cfg.distill.t_max, cfg.distill.fusion_opacity_weight) == (0.02, 0.98, 0.0)
        assert (cfg.circle_fit, cfg.circle_jitter) == ("inputs", 0.0)


def test_sparsefusion_paper_runs_in_the_harness_with_the_official_teacher(model_and_data):  # noqa: F811
    import torch

    from pipelines.harness.methods import MethodContext, build_method
    from scenes.co3d import CO3DDataset, CO3DOptions

    folder, root = model_and_data
    method = build_method("sparsefusion-paper", MethodContext(torch.device("cpu"), str(folder)))
    assert method.cfg.teacher.solver == "plms-stochastic" and method.cfg.circle_fit == "all"
    method.cfg.distill.iters, method.cfg.distill.bootstrap_iters = 4, 1
    method.cfg.field.n_levels, method.cfg.field.finest_resolution, method.cfg.circle_views = 2, 16, 4
    method.cfg.distill.sampler.n_coarse, method.cfg.distill.sampler.n_fine = 8, 8
    ds = CO3DDataset(root, "toys")
    views = ds.load(ds.sequences("fewview_dev", "test")[0], CO3DOptions(image_size=16))
    with torch.no_grad():
        out = method.predict(views.select([0, 3]), views.select([1, 2]).cameras)
    assert out.images.shape == (2, 3, 16, 16) and torch.isfinite(out.images).all()
    assert 0 <= out.stats["unet_evaluations"] <= 3 * 51  # 3 targets of min(int(100t), 50) + 1 calls

"""pixelNeRF and DFM: projection, view-order invariance, x̂0 as a render, sampling, training, harness."""

from __future__ import annotations

import json
import math

import pytest
import torch

from baselines.dfm import DFM
from baselines.dfm_sampling import sample_autoregressive, sample_oneshot
from baselines.pixel_field import ViewFeatures, sample_view_features
from baselines.pixelnerf import PixelNeRF
from pipelines.cli import main
from scenes.cameras import intrinsics_from_fov, look_at

SMALL = {"image_size": 32, "backbone": "resnet18", "width": 16, "n_blocks": 3, "combine_layer": 2}  # a small field


def ring(n: int, size: int = 32, distance: float = 3.0):
    """n cameras on a ring around the origin, looking at it."""
    a = torch.arange(n, dtype=torch.float32) * 2 * math.pi / n
    eye = distance * torch.stack([a.cos(), a.sin(), torch.full_like(a, 0.3)], -1)
    return look_at(eye, torch.zeros(3), torch.tensor([0.0, 0, 1]), intrinsics_from_fov(40.0, size, size), size, size)


def test_a_point_on_a_pixel_ray_samples_that_pixel():
    cams = ring(3, size=16)
    # feature maps holding each pixel's own centre (u, v)
    uv = cams.pixel_centers().permute(2, 0, 1)  # (2, H, W)
    views = ViewFeatures(uv[None].expand(3, -1, -1, -1).contiguous(), cams)
    o, d = cams[[1]].rays()  # rays of camera 1 through every pixel centre
    points = (o + 2.7 * d).reshape(-1, 3)
    feats, x_cam = sample_view_features(views, points)
    expected_uv, _ = cams.project(points[None].expand(3, -1, -1))
    inside = ((expected_uv > 0.5) & (expected_uv < 15.5)).all(-1)  # the ramp is exact between pixel centres
    assert inside.sum() > 400
    # in every view, the sample is taken where scenes.cameras projects the point
    torch.testing.assert_close(feats[inside], expected_uv[inside], atol=1e-3, rtol=0)
    torch.testing.assert_close(feats[1], cams.pixel_centers().reshape(-1, 2), atol=1e-3, rtol=0)  # its own pixel
    torch.testing.assert_close(x_cam[1].norm(dim=-1), torch.full((256,), 2.7), atol=1e-4, rtol=0)


def test_pixelnerf_is_invariant_to_the_order_of_input_views():
    torch.manual_seed(0)
    model = PixelNeRF(**SMALL, n_coarse=8, n_fine=4).eval()
    for p in model.field.parameters():  # leave the zero-initialised residual branches: break the symmetry
        p.data.normal_(0, 0.3)
    model.field.mlp.lin_out.bias.data[3] += 10.0  # dense enough that the render shows the features
    cams, images = ring(3), torch.rand(3, 3, 32, 32)
    o, d = ring(4)[[3]].rays()
    o, d = o.reshape(-1, 3)[:64], d.reshape(-1, 3)[:64]
    with torch.no_grad():
        a = model(images, cams, o, d, stratified=False).rgb
        b = model(images[[2, 0, 1]], cams[[2, 0, 1]], o, d, stratified=False).rgb
        c = model(images[[0, 1]], cams[[0, 1]], o, d, stratified=False).rgb
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert (a - c).abs().max() > 1e-3  # the views matter: dropping one changes the render


def _tiny_dfm(seed: int = 0) -> DFM:
    torch.manual_seed(seed)
    model = DFM(**SMALL, render_features=4, time_dim=8, n_coarse=8, n_fine=4, n_cond=8).eval()
    for p in list(model.field.parameters()) + list(model.cond_field.parameters()):
        p.data.normal_(0, 0.3)
    for field in (model.field, model.cond_field):
        field.mlp.lin_out.bias.data[3] += 10.0  # a dense field
    return model


def test_dfm_x0_is_a_render_of_the_field():
    model, cams = _tiny_dfm(), ring(4)
    images, x_t, t = torch.rand(2, 3, 32, 32), torch.randn(1, 3, 32, 32), torch.tensor([500])
    o, d = cams[[2]].rays()
    o, d = o.reshape(-1, 3)[:128], d.reshape(-1, 3)[:128]
    with torch.no_grad():
        x0, _ = model(images, cams[[0, 1]], x_t, t, cams[[2]], o, d)
        model.field.mlp.blocks[-1].fc0.weight.add_(0.5)  # another field ...
        x0_changed, _ = model(images, cams[[0, 1]], x_t, t, cams[[2]], o, d)
        model.field.mlp.lin_out.bias[3] = -1e4  # ... and a field with no density anywhere
        empty, _ = model(images, cams[[0, 1]], x_t, t, cams[[2]], o, d)
    assert (x0.rgb - x0_changed.rgb).abs().max() > 1e-3
    assert empty.rgb.abs().max() == 0 and empty.opacity.abs().max() == 0  # x̂0 is only what the renderer gives


def test_dfm_sampling_runs_one_shot_and_autoregressive():
    model, cams = _tiny_dfm(), ring(6)
    images = torch.rand(2, 3, 32, 32)
    a = sample_oneshot(model, images, cams[[0, 1]], cams[[3]], steps=3, generator=torch.Generator().manual_seed(0))
    b = sample_oneshot(model, images, cams[[0, 1]], cams[[3]], steps=3, generator=torch.Generator().manual_seed(0))
    assert a.image.shape == (1, 3, 32, 32) and a.renders == 3 and len(a.scene) == 3
    torch.testing.assert_close(a.image, b.image)  # seeded
    views, last = sample_autoregressive(model, images, cams[[0, 1]], cams[[2, 3, 4]], steps=2,
                                        generator=torch.Generator().manual_seed(0))
    assert views.shape == (3, 3, 32, 32) and len(last.scene) == 2 + 2 + 1  # inputs + 2 generated + the last target
    guided = sample_oneshot(model, images, cams[[0, 1]], cams[[3]], steps=2, guidance_scale=2.0)
    assert guided.renders == 4


@pytest.mark.parametrize("high_res", [False, True])
def test_dfm_warm_start_reproduces_pixelnerf_features(high_res):
    import torch.nn.functional as F

    torch.manual_seed(0)
    pn = PixelNeRF(**SMALL, n_coarse=8, n_fine=4, norm="group").eval()
    dfm = DFM(**SMALL, render_features=4, time_dim=8, n_coarse=8, n_fine=4, n_cond=8, high_res=high_res).eval()
    assert dfm.warm_start(pn) > 0
    images, cams = torch.rand(2, 3, 32, 32), ring(2)
    with torch.no_grad():
        ref = pn.encode(images, cams).maps  # (2, 512, 16, 16)
        got = dfm.encode_contexts(images, cams).maps
        if high_res:  # full resolution: the upsampled pixelNeRF features, the pixel-level refinement starts at 0
            assert got.shape[-2:] == (32, 32)
            ref = F.interpolate(ref, size=(32, 32), mode="bilinear", align_corners=False)
        pts, dirs = torch.randn(50, 3) * 0.5, torch.randn(50, 3)
        rgb_pn, sigma_pn, _ = pn.field(ViewFeatures(ref, cams), pts, dirs)
        rgb_dfm, sigma_dfm, extra = dfm.field(ViewFeatures(got, cams, torch.zeros(2)), pts, dirs)
    torch.testing.assert_close(got, ref)  # FiLM starts at the identity
    torch.testing.assert_close(rgb_dfm, rgb_pn)
    torch.testing.assert_close(sigma_dfm, sigma_pn)
    assert extra.abs().max() == 0  # the extra feature outputs start at zero


# ---------------------------------------------------------------------------------------------- commands
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from scenes.synthetic import generate

    root = tmp_path_factory.mktemp("data")
    generate(root, objects=[0, 1, 800, 801], views=8, image_size=64, workers=1, progress=False)
    return root


def _log_steps(out):
    """The steps of the training rows in a run's log (validation rows carry ``val_*`` keys, no ``loss``)."""
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """Tiny pixelNeRF and DFM runs: 2 steps, then resumed to 4."""
    out = tmp_path_factory.mktemp("runs")
    pn, dfm = out / "pixelnerf", out / "dfm"
    assert main(["train-pixelnerf", "--config", "tiny", "--data", str(data), "--out", str(pn), "--steps", "2"]) == 0
    assert main(["train-pixelnerf", "--config", "tiny", "--data", str(data), "--out", str(pn), "--steps", "4",
                 "--resume", "latest"]) == 0
    settings = ["train.val_every=2", "train.ema=true", "val_subset=fewview_train", "val_split=train", "val_examples=2"]
    assert main(["train-dfm", "--config", "tiny", "--data", str(data), "--out", str(dfm), "--steps", "2",
                 "--warm-start", str(pn), "train.preview_every=2", *settings]) == 0
    # a resume repeats the run's settings (config.yaml is checked); the warm start and previews may differ
    assert main(["train-dfm", "--config", "tiny", "--data", str(data), "--out", str(dfm), "--steps", "4",
                 "--resume", "latest", *settings]) == 0
    return pn, dfm


def test_training_resumes_and_saves_loadable_models(trained):
    from baselines.load import load_dfm, load_pixelnerf

    pn, dfm = trained
    assert _log_steps(pn) == [1, 2, 3, 4] and _log_steps(dfm) == [1, 2, 3, 4]
    for run in (pn, dfm):
        state = json.loads((run / "checkpoint-4" / "trainer_state.json").read_text())
        assert state["step"] == 4
    assert (dfm / "samples" / "step-0000002.png").is_file()
    val = [json.loads(line) for line in (dfm / "log.jsonl").read_text().splitlines() if "val_rgb" in line]
    assert [r["step"] for r in val] == [0, 2, 4]  # the fixed validation rows (live and EMA weights), the resumed run too
    assert all({"val_cond", "val_silhouette_area", "val_ema_rgb"} <= r.keys() for r in val)
    assert val[0]["val_rgb"] != val[1]["val_rgb"] and all(r["val_silhouette_area"] >= 0 for r in val)
    assert load_pixelnerf(pn).config.width == 16
    assert load_dfm(dfm).config.render_features == 8


def test_wrong_checkpoints_are_clear_errors(trained, data, tmp_path, capsys):
    pn, dfm = trained
    args = ["evaluate", "--data", str(data), "--max-scenes", "1", "--out", str(tmp_path / "e")]
    assert main([*args, "--method", "dfm", "--checkpoint", str(pn)]) == 2
    assert "not a DFM" in capsys.readouterr().err
    assert main([*args, "--method", "pixelnerf", "--checkpoint", str(tmp_path / "none")]) == 2
    assert "train-pixelnerf" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["pixelnerf", "dfm"])
def test_harness_runs_the_baselines(trained, data, tmp_path, method):
    pn, dfm = trained
    out = tmp_path / method
    ckpt = pn if method == "pixelnerf" else dfm
    assert main(["evaluate", "--method", method, "--checkpoint", str(ckpt), "--data", str(data), "--max-scenes", "1",
                 "--image-size", "32", "--out", str(out), "data.eval_frames=6"]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    row = summary["per_scene"][0]
    assert summary["scenes"] == 1 and math.isfinite(row["psnr"]) and row["seconds"] > 0
    assert row["field_renders"] == (4 if method == "pixelnerf" else 50 + 4)
    assert row["silhouette_from"] == "opacity" and 0 <= row["silhouette_iou"] <= 1
    assert "rendered opacity > 0.5 (" + method + ")" in (out / "metrics.md").read_text()


def test_two_process_pixelnerf_training(data, tmp_path):
    import os
    import subprocess
    import sys

    from test_train_vldm import _free_port

    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "pipelines", "train-pixelnerf", "--config", "tiny", "--data", str(data), "--out", str(out),
           "--steps", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    replicas = json.loads((out / "replicas.json").read_text())
    assert replicas["processes"] == 2 and replicas["agree"] and len(set(replicas["weights_sha256"])) == 1
    assert (out / "model" / "config.json").is_file()


def _turntable(data, checkpoint, gif) -> int:
    return main(["figure", "--kind", "dfm-turntable", "--out", str(gif), "--data", str(data), "--checkpoint",
                 str(checkpoint), "data.max_scenes=1", "data.image_size=32", "data.eval_frames=6", "steps=2", "scale=1",
                 "path_views=2", "frames=6"])


def test_baseline_figures(trained, data, tmp_path):
    pn, dfm = trained
    common = ["--data", str(data), "--checkpoint", str(dfm), "data.max_scenes=1", "data.image_size=32",
              "data.eval_frames=6", "steps=2", "scale=1"]
    png = tmp_path / "grid.png"
    assert main(["figure", "--kind", "baselines", "--out", str(png), f"pixelnerf_checkpoint={pn}", *common]) == 0
    from scenes.io import read_image

    assert read_image(png).shape == (2 + 32 + 2, 2 + 7 * (32 + 2), 3)  # 2 inputs, truth, pixelNeRF, 3 DFM samples
    # the turntable of a fixed dense field: the 4-step DFM's field is (near) empty in some runs (its training is
    # not bit-reproducible), and an empty scene is an error (next test)
    dense, gif = tmp_path / "dense-dfm", tmp_path / "turntable.gif"
    _tiny_dfm().save_pretrained(dense)
    assert _turntable(data, dense, gif) == 0
    import imageio.v2 as imageio

    frames = imageio.mimread(gif)
    assert len(frames) == 6
    assert max(int(f[..., :3].max()) for f in frames) > 16  # not an all-black turntable


def test_dfm_turntable_of_an_empty_scene_is_an_error_not_a_black_gif(data, tmp_path, capsys):
    """A field with no density (what the demo DFM's autoregressive samples collapse to after a few
    views) renders every frame black: the figure says so instead of writing a black GIF."""
    model = _tiny_dfm()
    with torch.no_grad():
        model.field.mlp.lin_out.bias[3] = -1e4  # no density anywhere
    model.save_pretrained(tmp_path / "empty-dfm")
    gif = tmp_path / "turntable.gif"
    assert _turntable(data, tmp_path / "empty-dfm", gif) == 2
    assert "scene is empty" in capsys.readouterr().err and not gif.exists()


def test_demo_dfm_samples_differ_where_unseen_and_agree_at_the_inputs(tmp_path):
    """Two seeds of the shipped demo DFM (10 DDIM steps: the property holds for any step count, and
    50 took a quarter of an hour of the suite), over three val objects: the sampled scenes differ
    less at an input camera than at the least-seen target camera."""
    from baselines.load import load_dfm
    from pipelines.harness.baseline_methods import least_seen
    from scenes.co3d import CO3DDataset, CO3DOptions
    from scenes.splits import eval_scenes, eval_sequences
    from scenes.synthetic import generate

    torch.set_grad_enabled(False)
    try:
        model = load_dfm()
        generate(tmp_path, objects=[800, 801, 802], views=32, image_size=64, workers=1, progress=False)
        ds = CO3DDataset(tmp_path, "random_objects")
        near, far = [], []
        for scene in eval_scenes(ds, eval_sequences(ds, "fewview_dev", "test"), 2, CO3DOptions(image_size=32), 32):
            k = least_seen(scene.inputs.cameras, scene.targets.cameras)
            cams = type(scene.inputs.cameras).cat([scene.inputs.cameras[[0]], scene.targets.cameras[[k]]])
            a, b = (model.render_scene(sample_oneshot(model, scene.inputs.images, scene.inputs.cameras,
                                                      scene.targets.cameras[[k]], steps=10,
                                                      generator=torch.Generator().manual_seed(seed)).scene, cams)
                    for seed in (0, 1))
            diff = (a - b).abs().mean(dim=(1, 2, 3))
            near.append(float(diff[0]))
            far.append(float(diff[1]))
    finally:
        torch.set_grad_enabled(True)
    assert sum(far) > sum(near), (near, far)

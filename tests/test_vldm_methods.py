"""The ``eft`` and ``vldm`` methods in the evaluation harness, and loading errors."""

import json
import shutil

import pytest
from test_eft import TINY
from test_vldm import tiny_model_and_sphere

from pipelines.cli import main
from vldm.eft import EpipolarFeatureTransformer


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    return tiny_model_and_sphere(tmp_path_factory, n_seq=2)


def _evaluate(method, folder, root, out):
    return main(["evaluate", "--method", method, "--checkpoint", str(folder), "--data", str(root),
                 "--category", "toys", "--views", "2", "--image-size", "32", "--out", str(out)])


@pytest.mark.parametrize("method", ["eft", "vldm"])
def test_methods_run_in_the_harness(model_and_data, tmp_path, method):
    folder, root = model_and_data
    options = ["options.steps=3"] if method == "vldm" else []
    assert main(["evaluate", "--method", method, "--checkpoint", str(folder), "--data", str(root), "--category",
                 "toys", "--views", "2", "--image-size", "32", "--out", str(tmp_path / method), *options]) == 0
    m = json.loads((tmp_path / method / "metrics.json").read_text())
    assert m["scenes"] == 2 and 0 < m["mean"]["psnr"] < 60
    assert m["mean"]["unet_evaluations"] == (3 * 4 if method == "vldm" else 0)  # 3 steps x 4 targets
    assert len(list((tmp_path / method / "views" / "seq_0").glob("*.png"))) == 4


def test_missing_and_mixed_checkpoints_are_clear_errors(model_and_data, tmp_path, capsys):
    folder, root = model_and_data
    assert _evaluate("eft", tmp_path / "nothing", root, tmp_path / "o") == 2
    assert "no VLDM model" in capsys.readouterr().err
    mixed = tmp_path / "mixed"
    shutil.copytree(folder, mixed)
    shutil.rmtree(mixed / "model" / "eft")
    EpipolarFeatureTransformer(**{**TINY, "d_model": 24}).save_pretrained(mixed / "model" / "eft")
    assert _evaluate("eft", mixed, root, tmp_path / "o2") == 2
    err = capsys.readouterr().err
    assert "mixes presets" in err and len([l for l in err.splitlines() if l.startswith("sparsefusion")]) == 1


def test_vldm_samples_figure(model_and_data, tmp_path):
    folder, root = model_and_data
    out = tmp_path / "grid.png"
    assert main(["figure", "--checkpoint", str(folder), "--data", str(root), "--category", "toys",
                 "--image-size", "32", "--max-scenes", "2", "--out", str(out), "steps=2", "scale=1"]) == 0
    from scenes.io import read_image

    img = read_image(out)
    # 2 rows, 2 inputs + truth + EFT + 3 samples = 7 columns of 32² tiles with 2 px gutters
    assert img.shape == (2 * 34 + 2, 7 * 34 + 2, 3)


def test_bench_writes_medians(model_and_data, tmp_path):
    folder, _ = model_and_data
    out = tmp_path / "bench.json"
    assert main(["bench", "--checkpoint", str(folder), "--out", str(out), "repeats=1", "steps=2",
                 "figures=[vldm_sampling,eft,vldm_train_step]"]) == 0
    r = json.loads(out.read_text())
    assert r["vldm_sampling_s_per_view"] > 0 and r["eft_s_per_view"] > 0 and r["vldm_train_images_per_s"] > 0
    assert r["machine"]["cpus"] >= 1 and r["image_size"] == 16


def test_bench_reconstruction_splits_an_iteration(model_and_data, tmp_path, capsys):
    folder, _ = model_and_data
    out = tmp_path / "bench.json"
    assert main(["bench", "--checkpoint", str(folder), "--out", str(out), "repeats=1", "preset=fast",
                 "figures=[reconstruction]"]) == 0
    r = json.loads(out.read_text())
    rec = r["reconstruction"]
    assert r["preset"] == "fast" and r["machine"]["cpus"] >= 1 and rec["image_size"] == 16
    # fast: 100 iterations after the bootstrap, a 2-step target reused 5 times -> 20 targets
    assert rec["unet_evaluations_per_scene"] == 40
    assert rec["vae_calls_per_scene"] == {"encode": 20, "decode": 20, "images_per_call": 1}
    assert rec["unet_evaluations_counted_in_timed_runs"] == rec["unet_evaluations_expected_in_timed_runs"] == 4
    assert rec["s_per_iteration"]["bootstrap"] > 0 and rec["s_per_iteration"]["distill"] > 0
    assert rec["s_per_scene"] > rec["eft_prepare_s"] > 0
    parts = {"field", "rendering", "unet", "vae", "lpips", "optimizer", "other"}
    for phase in ("bootstrap", "distill", "scene"):
        split = rec["split"][phase]
        assert parts <= set(split["seconds"]) and set(split["share"]) == set(split["seconds"])
        assert all(0 <= s <= 1 for s in split["share"].values())
        assert abs(sum(split["share"].values()) - 1) < 1e-6
    assert all(rec["split"]["distill"]["seconds"][k] > 0 for k in parts - {"other"})
    assert rec["split"]["bootstrap"]["seconds"]["unet"] == 0 and rec["split"]["scene"]["seconds"]["eft"] > 0
    if not rec["lpips"]["in_timed_loop"]:  # no VGG weights: timed with random ones, never reported as LPIPS
        assert rec["lpips"]["weights"].startswith("random") and "without the perceptual term" in rec["lpips"]["note"]
    printed = capsys.readouterr().out
    assert "largest: " + rec["largest"] in printed and "field fwd+bwd" in printed


def test_vldm_paper_is_the_official_ancestral_sampler(model_and_data):
    import torch

    from pipelines.harness.methods import MethodContext, build_method

    folder, _ = model_and_data
    method = build_method("vldm-paper", MethodContext(torch.device("cpu"), str(folder)))
    assert (method.name, method.steps, method.solver, method.clip_x0) == ("vldm-paper", 500, "ddpm", 10.0)
    assert build_method("vldm", MethodContext(torch.device("cpu"), str(folder))).steps == 25  # the fast default stays

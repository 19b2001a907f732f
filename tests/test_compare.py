"""``sparsefusion compare``: report files, skipped methods, resume, and torchrun sharding = one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import imageio.v2 as imageio
import pytest
import torch

from pipelines.cli import main

SMALL = {"image_size": 32, "backbone": "resnet18", "width": 16, "n_blocks": 3, "combine_layer": 2}  # a small field

METHODS = ["nearest-view", "eft", "pixelnerf", "dfm"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Four val objects (32², 8 views) and tiny untrained VLDM, pixelNeRF and DFM folders."""
    from baselines.pixelnerf import PixelNeRF
    from scenes.synthetic import generate
    from test_baselines import _tiny_dfm
    from test_vldm import tiny_pipeline

    root = tmp_path_factory.mktemp("data")
    generate(root, objects=[800, 801, 802, 803], views=8, image_size=32, workers=1, progress=False)
    models = tmp_path_factory.mktemp("models")
    tiny_pipeline().save_pretrained(models / "vldm" / "model")
    torch.manual_seed(0)
    PixelNeRF(**SMALL, n_coarse=8, n_fine=4).save_pretrained(models / "pixelnerf")
    _tiny_dfm().save_pretrained(models / "dfm")
    return root, models


def _args(setup, out, methods=METHODS) -> list[str]:
    root, models = setup
    return ["compare", "--methods", *methods, "--data", str(root), "--image-size", "32", "--out", str(out),
            "--vldm", str(models / "vldm"), "--pixelnerf", str(models / "pixelnerf"), "--dfm", str(models / "dfm"),
            "data.eval_frames=6", "grid_scenes=2", "turntable_frames=4"]


@pytest.fixture(scope="module")
def one_process(setup, tmp_path_factory):
    import pipelines.harness.compare as compare

    def unread(*args):
        raise AssertionError("a one-process run draws its grid from the predictions in memory")

    out = tmp_path_factory.mktemp("compare") / "one"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compare, "read_predictions", unread)
        assert main(_args(setup, out)) == 0
    return out


def _metrics(out) -> dict:
    """(method, scene) -> the scene's per-target metrics, from the gathered report."""
    report = json.loads((out / "compare.json").read_text())
    rows = {}
    for method, r in report["methods"].items():
        for cat, c in r["per_category"].items():
            for scene in json.loads((out / cat / method / "metrics.json").read_text())["per_scene"]:
                rows[method, scene["scene"]] = {k: scene[k] for k in ("psnr", "ssim", "psnr_fg")}
    return rows


def test_compare_writes_table_json_grid_and_turntables(one_process):
    text = (one_process / "compare.md").read_text()
    for method in METHODS:
        assert f"| {method} | 4 |" in text
    report = json.loads((one_process / "compare.json").read_text())
    assert list(report["methods"]) == METHODS and not report["skipped"]
    assert all(r["scenes"] == 4 and r["mean"]["psnr"] > 0 for r in report["methods"].values())
    grid = imageio.imread(one_process / "grid.png")
    assert grid.shape[0] > 2 * 64 and grid.shape[1] > (2 + 1 + len(METHODS)) * 64  # 2 rows; inputs, truth, methods
    gifs = report["turntables"]  # the 3D methods only, first scene
    assert sorted(gifs) == [f"random_objects/{m}/turntables/obj_800.gif" for m in ("dfm", "pixelnerf")]
    assert len(imageio.mimread(one_process / gifs[0])) == 4


def test_missing_model_is_skipped_with_the_reason(setup, tmp_path, capsys):
    root, models = setup
    out = tmp_path / "skip"
    assert main([*_args(setup, out, ["nearest-view", "vldm"]), f"models.vldm={tmp_path / 'none'}"]) == 0
    assert "skipping vldm: no VLDM model" in capsys.readouterr().out
    report = json.loads((out / "compare.json").read_text())
    assert list(report["methods"]) == ["nearest-view"] and "vldm" in report["skipped"]
    assert "## Skipped" in (out / "compare.md").read_text()


def test_rerun_keeps_finished_scenes(setup, one_process, tmp_path):
    import shutil

    out = tmp_path / "again"
    shutil.copytree(one_process, out)
    scene_files = sorted(out.glob("*/*/scenes/*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in scene_files}
    interrupted = out / "random_objects" / "pixelnerf" / "scenes" / "obj_802.json"
    interrupted.unlink()  # as if the run had stopped during this scene
    assert main(_args(setup, out)) == 0
    redone = [p for p in scene_files if not p.is_file() or p.stat().st_mtime_ns != stamps[p]]
    assert redone == [interrupted]
    # the grid's kept scenes are read back from their views: the same picture as drawn from memory
    assert (imageio.imread(out / "grid.png") == imageio.imread(one_process / "grid.png")).all()
    resumed, whole = _metrics(out), _metrics(one_process)
    assert resumed.keys() == whole.keys()  # float32 metrics of a rescored scene agree to rounding
    assert all(resumed[k] == pytest.approx(whole[k], rel=1e-6) for k in whole)


def test_two_processes_give_the_metrics_of_one(setup, one_process, tmp_path):
    from test_train_vldm import _free_port

    out = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "pipelines", *_args(setup, out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("results in") == 1  # only the main process writes and prints the report
    assert json.loads((out / "compare.json").read_text())["processes"] == 2
    one, two = _metrics(one_process), _metrics(out)
    assert one.keys() == two.keys() and len(one) == 4 * len(METHODS)
    for key in one:
        for metric, value in one[key].items():
            assert two[key][metric] == pytest.approx(value, abs=1e-5), (key, metric)

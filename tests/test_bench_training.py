"""``sparsefusion bench`` figure ``training``: one step of each demo model and where its time goes."""

import json

import pytest

from pipelines.cli import main


def test_training_figure_splits_a_step_of_each_model(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--out", str(out), "repeats=1", "figures=[training]", "training_models=[pixelnerf,vae]"]) == 0
    r = json.loads(out.read_text())["training"]
    assert set(r) == {"pixelnerf", "vae"}
    assert set(r["pixelnerf"]["split_s"]) == {"ResNet encoder", "field + rendering", "clip + Adam", "other"}
    assert set(r["vae"]["split_s"]) == {"encoder", "decoder", "clip + Adam", "other"}
    assert r["vae"]["images_per_step"] == 8  # the demo preset's batch
    for m in r.values():
        assert m["step_s"] > 0 and m["images_per_s"] == pytest.approx(m["images_per_step"] / m["step_s"])
        assert all(s >= 0 for s in m["split_s"].values())
        assert all(s > 0 for k, s in m["split_s"].items() if k != "other")
    assert "training step, pixelnerf" in capsys.readouterr().out


def test_unknown_training_model_is_a_user_error(tmp_path):
    assert main(["bench", "--out", str(tmp_path / "b.json"), "figures=[training]", "training_models=[nerf]"]) == 2

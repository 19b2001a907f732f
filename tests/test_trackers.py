"""Optional experiment trackers: a tiny training's TensorBoard events read back; a missing package is one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from trainer_fixtures import Points, linear, step_fn

import pipelines.training.trackers as trackers
from pipelines.training.train_config import TrainConfig
from pipelines.training.trainer import Trainer
from scenes.errors import UserError
from scenes.io import write_image


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 20, "lr": 0.05, "batch_size": 2, "save_every": 0, "log_every": 5, **kw})


def _preview(out):
    def sample(models, step):  # what the train-* previews do: a grid PNG per sampling step
        grid = np.zeros((8, 12, 3), np.float32)
        grid[:, : step // 2] = 1.0  # a different picture per step
        write_image(out / "samples" / f"step-{step:07d}.png", grid)

    return sample


def test_tensorboard_gets_the_log_jsonl_scalars_and_the_sample_grids(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'sparsefusion[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("train:\n  lr: 0.05\n  log_with: tensorboard\nmodel:\n  widths: [8, 16]\n")
    Trainer(_cfg(log_with="tensorboard", preview_every=10), {"net": linear()}, out).fit(
        Points(), step_fn(), preview_fn=_preview(out))
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    runs = list((out / "tensorboard" / "run").glob("events.out.tfevents.*"))
    assert len(runs) == 1
    events = EventAccumulator(str(runs[0].parent), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    assert {"loss", "lr", "images_per_s", "seconds", "abs_w"} <= set(events.Tags()["scalars"])
    for key in ("loss", "abs_w"):
        got = events.Scalars(key)
        assert [e.step for e in got] == [r["step"] for r in rows] == [5, 10, 15, 20]
        assert [e.value for e in got] == pytest.approx([r[key] for r in rows], rel=1e-6)
    assert events.Scalars("loss")[-1].value < events.Scalars("loss")[0].value
    images = events.Images("samples")
    assert [e.step for e in images] == [10, 20] and (images[0].width, images[0].height) == (12, 8)
    assert images[0].encoded_image_string != images[1].encoded_image_string


def test_a_missing_tracker_package_is_one_warning_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: None)
    out = tmp_path / "run"
    result = Trainer(_cfg(steps=4, log_every=2, log_with="wandb"), {"net": linear()}, out).fit(Points(), step_fn())
    assert result["steps"] == 4 and len((out / "log.jsonl").read_text().splitlines()) == 2
    warnings = [line for line in capsys.readouterr().err.splitlines() if "log_with" in line]
    assert len(warnings) == 1 and "needs the wandb package" in warnings[0] and "log.jsonl only" in warnings[0]


def test_an_unknown_tracker_is_refused(tmp_path):
    with pytest.raises(UserError, match="train.log_with must be one of tensorboard, wandb"):
        Trainer(_cfg(log_with="mlflow"), {"net": linear()}, tmp_path / "run")


def test_hyperparameters_are_flat_scalars(tmp_path):
    (tmp_path / "config.yaml").write_text("a: 1\nb: {c: null, d: [1, 2], e: {f: x}}\n")
    assert trackers._hyperparameters(tmp_path / "config.yaml") == {"a": 1, "b.c": "None", "b.d": "[1, 2]", "b.e.f": "x"}

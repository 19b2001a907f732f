"""The trainer's weights-only start (train.init_from), cosine learning rate and fixed validation loss."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from trainer_fixtures import Points, linear, step_fn

from pipelines.training.lr_schedule import lr_factor
from pipelines.training.train_config import TrainConfig
from pipelines.training.trainer import Trainer
from pipelines.training.weights_init import init_from_model
from scenes.errors import UserError


def _save(module: nn.Module, folder) -> None:
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, folder / "diffusion_pytorch_model.safetensors")


def test_init_from_copies_weights_of_each_part(tmp_path):
    a, b = linear(1), nn.Linear(3, 2)
    _save(a, tmp_path / "model" / "net")
    _save(b, tmp_path / "model" / "head")
    x, y = linear(7), nn.Linear(3, 2)
    assert not torch.equal(x.weight, a.weight)
    init_from_model(tmp_path / "model", {"net": x, "head": y})
    assert torch.equal(x.weight, a.weight) and torch.equal(x.bias, a.bias) and torch.equal(y.weight, b.weight)


def test_init_from_the_folder_itself_and_clear_errors(tmp_path):
    a = linear(1)
    _save(a, tmp_path / "m")
    x = linear(2)
    init_from_model(tmp_path / "m", {"": x})
    assert torch.equal(x.weight, a.weight)
    with pytest.raises(UserError, match="another architecture"):
        init_from_model(tmp_path / "m", {"": nn.Linear(5, 1)})  # weight (1, 4) against (1, 5)
    with pytest.raises(UserError, match="no \\*.safetensors"):
        init_from_model(tmp_path / "m", {"eft": linear()})
    with pytest.raises(UserError, match="not a folder"):
        init_from_model(tmp_path / "missing", {"": linear()})


def test_cosine_lr_factor_endpoints_and_middle():
    assert lr_factor("cosine", 0.1, 100, 0) == pytest.approx(1.0)
    assert lr_factor("cosine", 0.1, 100, 50) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor("cosine", 0.1, 100, 100) == pytest.approx(0.1)
    assert lr_factor("cosine", 0.1, 100, 25) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor("constant", 0.1, 100, 70) == 1.0


def test_cosine_schedule_reaches_the_optimizer_and_logs(tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(steps=10, lr=0.1, batch_size=2, save_every=0, log_every=5, lr_schedule="cosine", lr_min_ratio=0.0)
    Trainer(cfg, {"net": linear()}, out).fit(Points(), step_fn())
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    # the lr logged at step 5 is the one used for optimizer step 5 (0-based index 4)
    assert rows[0]["lr"] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 4 / 10)))
    with pytest.raises(UserError, match="lr_schedule"):
        Trainer(TrainConfig(lr_schedule="linear"), {"net": linear()}, out)


def test_validation_rows_are_fixed_and_logged(tmp_path):
    out = tmp_path / "run"
    data = Points()
    calls = []

    def val(models):
        net = models["net"]
        assert not net.training and not torch.is_grad_enabled()
        calls.append(1)
        return {"mse": ((net(data.x) - data.y) ** 2).mean().item()}

    cfg = TrainConfig(steps=60, lr=0.2, batch_size=2, save_every=0, log_every=10, val_every=30)
    Trainer(cfg, {"net": linear()}, out).fit(data, step_fn(), val_fn=val)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    vals = [r for r in rows if "val_mse" in r]
    assert [r["step"] for r in vals] == [0, 30, 60] and len(calls) == 3
    assert vals[-1]["val_mse"] < vals[0]["val_mse"] / 4  # the model learnt: the fixed loss falls

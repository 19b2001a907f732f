"""The shared trainer: learning, checkpoints and pruning, exact resume, NaN stop, EMA, two processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from trainer_fixtures import Points, linear, step_fn

from pipelines.training.train_config import TrainConfig
from pipelines.training.trainer import Trainer, TrainingDiverged, complete_checkpoints, epoch_order
from scenes.errors import UserError


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 4, "lr": 0.05, "batch_size": 2, "save_every": 2, "log_every": 1, **kw})


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_loss_decreases_and_log_lines(tmp_path):
    out = tmp_path / "run"
    result = Trainer(_cfg(steps=60, lr=0.2, log_every=10, save_every=0), {"net": linear()}, out).fit(Points(), step_fn())
    rows = _log(out)
    assert [r["step"] for r in rows] == [10, 20, 30, 40, 50, 60]
    assert rows[-1]["loss"] < rows[0]["loss"] / 5
    for r in rows:
        assert {"step", "loss", "lr", "images_per_s", "seconds", "abs_w"} <= r.keys()
        assert r["lr"] == 0.2 and r["images_per_s"] > 0 and r["seconds"] >= 0
    assert result["steps"] == 60 and result["loss"] == pytest.approx(rows[-1]["loss"])
    assert [p.name for p in complete_checkpoints(out)] == ["checkpoint-60"]  # the end is always saved


def test_checkpoints_are_pruned_to_keep_last(tmp_path):
    out = tmp_path / "run"
    Trainer(_cfg(steps=7, save_every=2, keep_last=2), {"net": linear()}, out).fit(Points(), step_fn())
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == ["checkpoint-6", "checkpoint-7"]
    ck = out / "checkpoint-6"
    assert json.loads((ck / "trainer_state.json").read_text())["step"] == 6
    assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl"} <= {p.name for p in ck.iterdir()}


def test_incomplete_checkpoint_is_never_resumed(tmp_path):
    out = tmp_path / "run"
    Trainer(_cfg(steps=2), {"net": linear()}, out).fit(Points(), step_fn())
    half = out / "checkpoint-9"  # a save killed before its state file was written
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    assert [p.name for p in complete_checkpoints(out)] == ["checkpoint-2"]
    trainer = Trainer(_cfg(steps=3, resume="latest"), {"net": linear(1)}, out)
    assert trainer.fit(Points(), step_fn())["start_step"] == 2


def _adam_state(trainer) -> list[dict]:
    opt = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    return [{k: v.clone() for k, v in opt.state[p].items()} for p in trainer.params]


def test_resume_continues_with_the_same_optimizer_state_and_weights(tmp_path):
    kw = {"grad_accum": 2, "ema": True, "ema_decay": 0.9}  # 3 micro-batches per epoch: crosses epochs
    finals = {}

    def keep(name):
        def final(models, ema_models, out):
            finals[name] = (models["net"].weight.detach().clone(), ema_models["net"].weight.detach().clone())
        return final

    # uninterrupted: 4 steps
    full = Trainer(_cfg(**kw), {"net": linear()}, tmp_path / "full")
    seen_full: list = []
    full.fit(Points(6), step_fn(noise=0.3, seen=seen_full), final_fn=keep("full"))
    # interrupted after step 2 ...
    first = Trainer(_cfg(steps=2, **kw), {"net": linear()}, tmp_path / "cut")
    seen_cut: list = []
    first.fit(Points(6), step_fn(noise=0.3, seen=seen_cut))
    saved = _adam_state(first)
    # ... and resumed by a new process-like Trainer on a freshly initialised model
    second = Trainer(_cfg(resume="latest", **kw), {"net": linear(seed=99)}, tmp_path / "cut")
    checked = []

    def check_then_step(models, batch, step):
        if not checked:
            assert step == 2
            for got, want in zip(_adam_state(second), saved):
                assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
            checked.append(True)
        return inner(models, batch, step)

    inner = step_fn(noise=0.3, seen=seen_cut)
    result = second.fit(Points(6), check_then_step, final_fn=keep("cut"))
    assert checked and result["start_step"] == 2 and result["steps"] == 4
    assert seen_cut == seen_full  # same examples in the same order after the resume
    assert torch.allclose(finals["cut"][0], finals["full"][0], atol=1e-7)
    assert torch.allclose(finals["cut"][1], finals["full"][1], atol=1e-7)  # EMA restored too
    assert not torch.allclose(finals["full"][0], finals["full"][1])  # EMA differs from the raw weights
    assert [r["step"] for r in _log(tmp_path / "cut")] == [1, 2, 3, 4]


def test_ema_is_saved_in_checkpoints_and_differs_from_raw(tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(_cfg(steps=4, ema=True, ema_decay=0.9), {"net": linear()}, out)
    trainer.fit(Points(), step_fn())
    ema = load_file(out / "checkpoint-4" / "ema_net.safetensors")
    raw = load_file(out / "checkpoint-4" / "model.safetensors")
    assert torch.equal(ema["0"], trainer.ema["net"].shadow_params[0])
    assert not torch.allclose(ema["0"], raw["weight"])
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["ema"]["net"]["optimization_step"] == 4


def test_validation_rows_hold_the_live_and_the_ema_weights_loss(tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(_cfg(steps=4, ema=True, ema_decay=0.9, val_every=2, save_every=0), {"net": linear()}, out)
    weight = lambda models: {"w": float(models["net"].weight.sum())}  # noqa: E731  a "loss" that shows the weights
    trainer.fit(Points(), step_fn(), val_fn=weight)
    rows = [r for r in _log(out) if "val_w" in r]
    assert [r["step"] for r in rows] == [0, 2, 4]
    assert rows[-1]["val_w"] == pytest.approx(float(trainer.unwrapped["net"].weight.sum()))
    assert rows[-1]["val_ema_w"] == pytest.approx(float(trainer.ema["net"].shadow_params[0].sum()))
    assert rows[-1]["val_ema_w"] != pytest.approx(rows[-1]["val_w"])
    assert rows[0]["val_ema_w"] == pytest.approx(rows[0]["val_w"])  # before the first step they are one model


def test_ema_model_carries_an_ema_of_the_buffers_not_the_live_ones(tmp_path):
    """BatchNorm running statistics: the saved EMA model gets their average at the EMA's decay."""
    from pipelines.training.buffer_ema import BufferEMA

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
    by_hand = BufferEMA(net)
    live = []  # the decay of each step

    def step(models, batch, i):
        loss = ((models["net"](batch["x"]) - batch["y"]) ** 2).mean()
        return {"loss": loss}

    trainer = Trainer(_cfg(steps=3, ema=True, ema_decay=0.9, batch_size=4), {"net": net}, tmp_path / "run")
    real = trainer.ema_buffers["net"].step

    def spy(module, decay):
        live.append(decay)
        by_hand.step(module, decay)
        real(module, decay)

    trainer.ema_buffers["net"].step = spy
    trainer.fit(Points(), step)
    ema_net = trainer.ema_models()["net"]
    assert len(live) == 3 and live[0] < 0.9  # diffusers' warm-up of the decay
    torch.testing.assert_close(ema_net[1].running_mean, by_hand.shadow["1.running_mean"])
    assert not torch.allclose(ema_net[1].running_mean, net[1].running_mean)  # not the live statistics
    saved = load_file(tmp_path / "run" / "checkpoint-3" / "ema_buffers_net.safetensors")
    torch.testing.assert_close(saved["1.running_var"], by_hand.shadow["1.running_var"])


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    inner = step_fn()

    def poisoned(models, batch, step):
        res = inner(models, batch, step)
        if step == 2:
            res["loss"] = res["loss"] * float("nan")
        return res

    before = None
    trainer = Trainer(_cfg(steps=6), {"net": linear()}, out)
    with pytest.raises(TrainingDiverged) as err:
        trainer.fit(Points(), poisoned)
    assert isinstance(err.value, UserError)
    message = str(err.value)
    assert "loss is nan at step 3" in message and "checkpoint-2" in message and "kept" in message
    assert [p.name for p in complete_checkpoints(out)] == ["checkpoint-2"]
    before = load_file(out / "checkpoint-2" / "model.safetensors")["weight"]
    assert torch.isfinite(before).all() and torch.isfinite(trainer.unwrapped["net"].weight).all()


def test_bad_settings_and_resume_paths_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="mixed_precision"):
        Trainer(_cfg(mixed_precision="fp8"), {"net": linear()}, tmp_path)
    with pytest.raises(UserError, match="not a complete checkpoint"):
        Trainer(_cfg(resume=str(tmp_path / "nope")), {"net": linear()}, tmp_path).fit(Points(), step_fn())


def test_epoch_order_splits_each_epoch_between_processes():
    a, b = epoch_order(7, 2, 0, 0, 3), epoch_order(7, 2, 1, 0, 3)
    assert len(a) == len(b) == 4 and set(a) | set(b) == set(range(7))
    assert epoch_order(7, 2, 0, 0, 4) != a or epoch_order(7, 2, 1, 0, 4) != b


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_with_torchrun_end_with_identical_weights(tmp_path):
    script = Path(__file__).parent / "ddp_train_script.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), str(script), str(tmp_path / "ddp")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((tmp_path / "ddp" / f"rank-{i}.json").read_text()) for i in range(2)]
    assert all(x["num_processes"] == 2 and x["steps"] == 3 for x in ranks)
    assert "MULTI_CPU" in ranks[0]["distributed"]
    assert ranks[0]["hash"] == ranks[1]["hash"]  # DDP kept the weights identical
    for step in range(3):  # each process drew different examples at every step
        mine = [set(idx) for s, idx in ranks[0]["seen"] if s == step]
        theirs = [set(idx) for s, idx in ranks[1]["seen"] if s == step]
        assert mine and theirs and not (mine[0] & theirs[0])
    assert len(_log(tmp_path / "ddp")) == 3  # only the main process writes the log
    assert [p.name for p in complete_checkpoints(tmp_path / "ddp")] == ["checkpoint-2", "checkpoint-3"]
    for ck in ("checkpoint-2", "checkpoint-3"):  # renamed into place only once every process has written
        assert (tmp_path / "ddp" / ck / "random_states_1.pkl").is_file()

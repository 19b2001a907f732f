"""``sparsefusion train-vldm`` end to end on tiny data: model folder, resume, two processes, clear errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from pipelines.cli import main

TINY_DATA = dict(objects=[0, 1, 800, 801], views=8, image_size=64, workers=1, progress=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny rendered dataset and a tiny VAE folder."""
    from scenes.synthetic import generate
    from vldm.autoencoder import small_vae

    root = tmp_path_factory.mktemp("data")
    generate(root, **TINY_DATA)
    vae_dir = tmp_path_factory.mktemp("vae")
    torch.manual_seed(0)
    small_vae(block_out_channels=(8, 16, 16), sample_size=32).save_pretrained(vae_dir)
    return root, vae_dir


def _args(root, vae, out, *extra):
    return ["train-vldm", "--config", "tiny", "--data", str(root), "--vae", str(vae), "--out", str(out), *extra]


def _log_steps(out):
    return [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]


def test_tiny_training_saves_a_loadable_pipeline_and_resumes(setup, tmp_path):
    root, vae = setup
    out = tmp_path / "run"
    assert main(_args(root, vae, out, "--steps", "2")) == 0
    assert _log_steps(out) == [1, 2]
    from vldm.load import load_vldm

    pipe = load_vldm(out)
    assert pipe.unet.config.in_channels == 4 + 16 and pipe.unet.config.sample_size == 8
    # "killed" after step 2: resuming continues at step 3 and ends at 4, with the saved optimizer state
    state_2 = torch.load(out / "checkpoint-2" / "optimizer.bin", weights_only=True)
    assert main(_args(root, vae, out, "--steps", "4", "--resume", "latest")) == 0
    assert _log_steps(out) == [1, 2, 3, 4]
    state_4 = torch.load(out / "checkpoint-4" / "optimizer.bin", weights_only=True)
    assert state_4["state"][0]["step"].item() == state_2["state"][0]["step"].item() + 2
    # EFT RGB and a sample come out of the reloaded model
    from scenes.co3d import CO3DDataset, CO3DOptions
    from scenes.splits import eval_scenes, eval_sequences

    ds = CO3DDataset(root, "random_objects")
    scene = next(eval_scenes(ds, eval_sequences(ds, "fewview_dev", "test"), 2, CO3DOptions(image_size=32), 8))
    res = load_vldm(out)(scene.inputs.images, scene.inputs.cameras, scene.targets.cameras[[0, 1]],
                         num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert res.images.shape == (2, 3, 32, 32) and torch.isfinite(res.images).all()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_training_agrees_on_weights(setup, tmp_path):
    root, vae = setup
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "pipelines", *_args(root, vae, out, "--steps", "2")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    replicas = json.loads((out / "replicas.json").read_text())
    assert replicas["processes"] == 2 and replicas["agree"]
    assert len(set(replicas["weights_sha256"])) == 1


def test_clear_errors(setup, tmp_path, capsys):
    root, vae = setup
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a vae")
    assert main(_args(root, junk, tmp_path / "a")) == 2
    assert "junk.bin" in capsys.readouterr().err
    assert main(_args(root, vae, tmp_path / "b", "contexts_max=9", "frames_per_sample=10")) == 2
    assert "at most 8 views" in capsys.readouterr().err


def test_validation_loss_is_fixed_and_init_from_continues_the_model(setup, tmp_path):
    """The step-2 validation row of a run equals the step-0 row of a run started from its model/ folder."""
    root, vae = setup
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(_args(root, vae, first, "--steps", "2", "train.val_every=2", "train.ema=false",
                      "val_subset=fewview_dev", "val_examples=2")) == 0
    assert main(_args(root, vae, second, "--steps", "1", "--init-from", str(first / "model"), "train.val_every=1",
                      "train.ema=false", "val_subset=fewview_dev", "val_examples=2")) == 0
    rows = lambda out: [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]  # noqa: E731
    v1 = {r["step"]: r for r in rows(first) if "val_loss" in r}
    v2 = {r["step"]: r for r in rows(second) if "val_loss" in r}
    assert sorted(v1) == [0, 2] and sorted(v2) == [0, 1]
    assert {"val_diffusion", "val_rgb", "val_eft_psnr"} <= v1[2].keys()
    assert v2[0]["val_loss"] == pytest.approx(v1[2]["val_loss"], rel=1e-5)  # same weights, examples, t, noise
    assert v1[0]["val_loss"] != pytest.approx(v1[2]["val_loss"], rel=1e-5)  # and the figure moves with training


def test_batches_of_several_sequences_and_bf16_train(setup, tmp_path):
    # train.batch_size=2: examples with different numbers of contexts share one step (EFT per
    # example, UNet batched); bf16 autocast runs (the EFT keeps its geometry in float32)
    root, vae = setup
    out = tmp_path / "b2"
    # its own process: accelerate fixes the mixed precision once per process
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "pipelines", *_args(root, vae, out, "--steps", "2", "train.batch_size=2",
                                                    "train.mixed_precision=bf16")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["loss"] == r["loss"] for r in rows)  # finite, not NaN
    from vldm.load import load_vldm

    assert load_vldm(out).unet.config.in_channels == 4 + 16


def test_a_batch_step_sees_every_example():
    from scenes.training import collate_examples

    assert collate_examples([{"a": 1}]) == {"a": 1}  # batch_size 1: the example itself, as before
    assert collate_examples([{"a": 1}, {"a": 2}]) == [{"a": 1}, {"a": 2}]

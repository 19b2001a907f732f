"""``sparsefusion train-vae`` end to end on a tiny rendered dataset: model, metrics, resume, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import AutoencoderKL

from pipelines.cli import main

pytest.importorskip("pybullet")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from scenes.synthetic import generate

    root = tmp_path_factory.mktemp("pybullet_tiny")
    generate(root, objects=[0, 1, 800, 801], views=8, image_size=64, workers=1, progress=False)
    return root


def _args(root, out, *extra):
    return ["train-vae", "--config", "tiny", "--data", str(root), "--out", str(out), *extra]


def test_tiny_preset_end_to_end_and_resume(root, tmp_path, capsys):
    out = tmp_path / "vae"
    assert main(_args(root, out)) == 0
    vae = AutoencoderKL.from_pretrained(out / "model")
    assert list(vae.config.block_out_channels) == [8, 16, 16]
    assert sorted(p.name for p in (out / "model").iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert isinstance(metrics["psnr"], float) and 0 < metrics["psnr"] < 60
    assert metrics["val_frames"] == 8 and metrics["train_frames"] == 16 and metrics["train_sequences"] == 2
    assert metrics["latent_shape"] == [4, 8, 8] and metrics["steps"] == 10
    assert metrics["lpips_loss"].startswith(("unavailable", "used"))
    # the scaling factor gives unit-std latents on training frames, and is stored in the config
    assert vae.config.scaling_factor == pytest.approx(metrics["scaling_factor"]) and vae.config.scaling_factor != 1.0
    text = capsys.readouterr().out
    assert "reconstruction PSNR" in text and "8 validation frames" in text
    assert (out / "config.yaml").is_file()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [5, 10] and all({"l1", "mse", "kl"} <= r.keys() for r in log)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-5"]

    # resume: extend the run to 15 steps from the newest checkpoint
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    assert main(_args(root, out, "--steps", "15", "--resume", "latest")) == 0
    text = capsys.readouterr().out
    assert "resumed from" in text and "checkpoint-10" in text
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [5, 10, 15]
    assert json.loads((out / "metrics.json").read_text())["steps"] == 15
    after = AutoencoderKL.from_pretrained(out / "model").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_train_vae_clear_errors(root, tmp_path, capsys):
    assert main(_args(root, tmp_path / "o", "data.image_size=30")) == 2
    assert "must be divisible by the VAE's downsampling 4" in capsys.readouterr().err
    assert main(_args(root, tmp_path / "o", "--resume", str(tmp_path / "nowhere"))) == 2
    assert "not a complete checkpoint folder" in capsys.readouterr().err
    assert main(_args(root, tmp_path / "o", "val_subset=fewview_train", "val_split=train")) == 2
    assert "also training sequences" in capsys.readouterr().err

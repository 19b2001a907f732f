"""The co3d training presets start from ImageNet ResNet weights, or refuse to start (unless told ``random``)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from pipelines.cli import main
from scenes.backbone import IMAGENET_FILES, PixelFeatureEncoder, imagenet_weights_path, resolve_backbone_weights
from scenes.errors import UserError


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """A torch hub folder without any checkpoint."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    return tmp_path / "hub"


def _one_line(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    messages = [line for line in err.splitlines() if line.startswith("sparsefusion ")]
    assert len(messages) == 1 and err.endswith(messages[0]) and "Traceback" not in err, err
    return messages[0]


@pytest.mark.parametrize("command,arch", [("train-vldm", "resnet18"), ("train-pixelnerf", "resnet34")])
def test_co3d_preset_refuses_without_imagenet_weights(command, arch, empty_hub, tmp_path, capsys):
    msg = _one_line(capsys, [command, "--config", "co3d", "--out", str(tmp_path / "o")])
    expected = empty_hub / "checkpoints" / IMAGENET_FILES[arch]
    assert f"ImageNet {arch} weights not found" in msg and IMAGENET_FILES[arch] in msg and str(expected) in msg
    assert "random" in msg
    # writing random gets past the check (and stops at the next missing thing: VAE or data)
    msg = _one_line(capsys, [command, "--config", "co3d", "--out", str(tmp_path / "o"), "model.backbone_weights=random"])
    assert "ImageNet" not in msg


def test_imagenet_resolves_to_the_hub_file_and_loads(empty_hub):
    path = imagenet_weights_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    torch.save(net.state_dict(), path)
    assert resolve_backbone_weights("resnet18", "imagenet") == str(path)
    assert resolve_backbone_weights("resnet18", "random") is None and resolve_backbone_weights("resnet18", None) is None
    assert resolve_backbone_weights("resnet18", "/some/file.pth") == "/some/file.pth"
    enc = PixelFeatureEncoder("resnet18", str(path))
    torch.testing.assert_close(enc.stem[0].weight, net.conv1.weight)
    with pytest.raises(UserError, match="resnet34-b627a593.pth"):
        resolve_backbone_weights("resnet34", "imagenet")

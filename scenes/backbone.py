"""pixelNeRF-style image features: a ResNet's early layers, resized to H/2 and concatenated.

ResNet-18 (EFT) and ResNet-34 (pixelNeRF) give 64 + 64 + 128 + 256 = 512 channels at H/2.
ImageNet weights are loaded only from a local file; otherwise the weights are random (the
training commands say so in one line).

``norm``: ``batch`` is torchvision's (ImageNet-compatible) BatchNorm; ``group`` puts GroupNorm
(32 groups) in every place instead, so an image's features never depend on the other images
of its batch or on running statistics: train and eval mode compute the same function (what a
time-conditioned denoiser needs, and what a model trained one small batch at a time wants).

:func:`resolve_backbone_weights` turns a config value
(``imagenet``, ``random``, a path or null) into that file or None.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from .errors import UserError

FEATURE_CHANNELS = 512
NORMS = ("batch", "group")
GROUPS = 32


def norm_layer(norm: str):
    """The normalisation layer factory of ``norm`` (channels -> module)."""
    if norm not in NORMS:
        raise UserError(f"unknown norm {norm!r} (batch or group)")
    if norm == "batch":
        return nn.BatchNorm2d
    return lambda channels: nn.GroupNorm(min(GROUPS, channels), channels)

# torchvision's ImageNet (IMAGENET1K_V1) files, as its downloader names them.
IMAGENET_FILES = {"resnet18": "resnet18-f37072fd.pth", "resnet34": "resnet34-b627a593.pth"}
IMAGENET_URL = "https://download.pytorch.org/models/{}"


def imagenet_weights_path(arch: str) -> Path:
    """Where ``backbone_weights: imagenet`` looks: torchvision's file in the torch hub checkpoint folder."""
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILES[arch]


def resolve_backbone_weights(arch: str, value: str | None) -> str | None:
    """Config value -> weights file or None (random init): ``imagenet`` must be on disk; ``random``/null: None."""
    if value is None or value == "random":
        return None
    if value != "imagenet":
        return value
    if arch not in IMAGENET_FILES:
        raise UserError(f"unknown backbone {arch!r} (resnet18 or resnet34)")
    path = imagenet_weights_path(arch)
    if not path.is_file():
        name = IMAGENET_FILES[arch]
        raise UserError(f"ImageNet {arch} weights not found: put {name} ({IMAGENET_URL.format(name)}) at {path}, "
                        f"or set model.backbone_weights to its path, or to random to train from random weights")
    return str(path)


class PixelFeatureEncoder(nn.Module):
    """conv1 + layer1..3 of a torchvision ResNet; images (B,3,H,W) in [0,1] -> (B,512,H/2,W/2)."""

    def __init__(self, arch: str = "resnet18", weights_path: str | None = None, norm: str = "batch"):
        super().__init__()
        if arch not in ("resnet18", "resnet34"):
            raise UserError(f"unknown backbone {arch!r} (resnet18 or resnet34)")
        net = getattr(torchvision.models, arch)(weights=None, norm_layer=norm_layer(norm))
        if weights_path:
            if norm != "batch":
                raise UserError(f"ImageNet weights are for BatchNorm; norm={norm!r} cannot use {weights_path}")
            path = Path(weights_path)
            if not path.is_file():
                raise UserError(f"backbone weights not found: {path}")
            state = torch.load(path, map_location="cpu", weights_only=True)
            missing, _ = net.load_state_dict(state, strict=False)
            if any(k.startswith(("conv1", "layer1")) for k in missing):
                raise UserError(f"{path} is not a torchvision {arch} state dict")
        self.norm = norm
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.pool = net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3

    def forward(self, images: Tensor) -> Tensor:
        x0 = self.stem(images)  # (B, 64, H/2, W/2)
        x1 = self.layer1(self.pool(x0))  # (B, 64, H/4, W/4)
        x2 = self.layer2(x1)  # (B, 128, H/8, W/8)
        x3 = self.layer3(x2)  # (B, 256, H/16, W/16)
        size = x0.shape[-2:]
        ups = [F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in (x1, x2, x3)]
        return torch.cat([x0, *ups], dim=1)

"""DFM's time-conditioned image encoder: pixelNeRF's ResNet with FiLM of t, and a pixel-level path.

The official default encoder is a DiT-XL/2 (LayerNorm, adaLN); this is its ``model_type=resnet``
option made warm-startable from our pixelNeRF. No normalisation here uses batch statistics
(``norm="group"``): the denoiser sees one noisy target at a time in training and must compute
the same function when sampling. With ``high_res`` (the official ``use_high_res`` path, on in
its training) the H/2 features are upsampled to H×W and refined with a stride-1 7×7 convolution
of the pixels themselves: the noisy target x_t and the rendered RGB (a clean context is its own
x_t and its own render, so it passes [rgb, rgb]).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scenes.backbone import FEATURE_CHANNELS, PixelFeatureEncoder, norm_layer

from .pixel_field import TimeMLP

SKIP_CHANNELS = 64


class TimeConditionedEncoder(nn.Module):
    """pixelNeRF's ResNet features with a FiLM of the time after each stage.

    (B, C_in, H, W) in [-1, 1], t (B,) -> (B, 512, H/2, W/2), or (B, 512, H, W) with ``high_res``.
    Clean RGB (3 channels) goes through the ResNet's own stem, the target input (``target_channels``:
    [x_t, rendered RGB, depth, features]) through a second 7×7 stem (the official ``conv1`` /
    ``general_conv1``); the rest is shared.
    """

    def __init__(self, backbone: str, target_channels: int, time_dim: int, norm: str = "group",
                 high_res: bool = True):
        super().__init__()
        self.resnet = PixelFeatureEncoder(backbone, norm=norm)
        self.target_stem = nn.Sequential(nn.Conv2d(target_channels, 64, 7, 2, 3, bias=False), norm_layer(norm)(64),
                                         nn.ReLU(inplace=True))
        self.time = TimeMLP(time_dim)
        widths = (64, 64, 128, 256)  # stem, layer1..3
        self.films = nn.ModuleList(nn.Linear(2 * time_dim, 2 * w) for w in widths)
        for film in self.films:  # start as the plain ResNet
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)
        self.high_res = high_res
        if high_res:
            self.skip = nn.Conv2d(6, SKIP_CHANNELS, 7, 1, 3)
            self.refine = nn.Conv2d(FEATURE_CHANNELS + SKIP_CHANNELS, FEATURE_CHANNELS, 3, 1, 1)
            nn.init.zeros_(self.refine.weight)  # starts as the upsampled ResNet features (official: zero too)
            nn.init.zeros_(self.refine.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        emb = self.time(t)
        r = self.resnet

        def film(h: Tensor, k: int) -> Tensor:
            scale, shift = self.films[k](emb)[..., None, None].chunk(2, dim=1)
            return h * (1 + scale) + shift

        clean = x.shape[1] == 3
        x0 = film(r.stem(x) if clean else self.target_stem(x), 0)
        x1 = film(r.layer1(r.pool(x0)), 1)
        x2 = film(r.layer2(x1), 2)
        x3 = film(r.layer3(x2), 3)
        ups = [F.interpolate(h, size=x0.shape[-2:], mode="bilinear", align_corners=False) for h in (x1, x2, x3)]
        feats = torch.cat([x0, *ups], dim=1)  # (B, 512, H/2, W/2)
        if not self.high_res:
            return feats
        pixels = torch.cat([x, x], dim=1) if clean else x[:, :6]  # (B, 6, H, W): x_t and the rendered RGB
        up = F.interpolate(feats, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return up + self.refine(torch.cat([up, self.skip(pixels)], dim=1))  # (B, 512, H, W)

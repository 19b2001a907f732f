"""A tiny regression problem for the trainer tests (also run by the torchrun test script)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

W_TRUE = torch.tensor([[1.5, -2.0, 0.5, 3.0]])


class Points(Dataset):
    """n fixed points (x, y = x·w + 0.7); items are dicts with their index."""

    def __init__(self, n: int = 12):
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ W_TRUE.T + 0.7

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "index": torch.tensor(i)}


def linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(4, 1)


def step_fn(noise: float = 0.0, seen: list | None = None):
    """MSE of the linear model; ``noise`` adds random input jitter (exercises the restored RNG)."""

    def step(models, batch, step):
        if seen is not None:
            seen.append((step, batch["index"].tolist()))
        x = batch["x"] + noise * torch.randn_like(batch["x"])
        loss = ((models["net"](x) - batch["y"]) ** 2).mean()
        net = getattr(models["net"], "module", models["net"])  # attributes live on the unwrapped module
        return {"loss": loss, "abs_w": net.weight.abs().mean().detach()}

    return step

"""Training logs: the running window of losses between log lines, and ``log.jsonl``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from scenes.io import write_bytes


class Window:
    """Sums of the losses and logs since the last log line."""

    def __init__(self, device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.loss, self.count, self.images, self.extra, self.t0 = 0.0, 0, 0, {}, time.perf_counter()

    def add(self, loss: torch.Tensor, out: dict, images: int) -> None:
        self.loss = self.loss + loss.detach().float()
        self.count += 1
        self.images += images
        for k, v in out.items():
            if k not in ("loss", "images") and (isinstance(v, (int, float)) or (torch.is_tensor(v) and v.numel() == 1)):
                self.extra[k] = self.extra.get(k, 0.0) + (v.detach().float() if torch.is_tensor(v) else float(v))

    def flush(self, acc, step: int, lr: float, seconds: float) -> dict:
        """One log row: mean loss over processes, images/s over processes, this process's other logs."""
        stats = torch.stack([torch.as_tensor(self.loss, dtype=torch.float32, device=self.device).reshape(()),
                             torch.tensor(float(self.count), device=self.device),
                             torch.tensor(float(self.images), device=self.device)])
        if acc.num_processes > 1:
            stats = acc.reduce(stats, "sum")
        loss, count, images = stats.tolist()
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        row = {"step": step, "loss": loss / max(count, 1), "lr": lr, "images_per_s": images / elapsed,
               "seconds": round(seconds, 3)}
        row.update({k: float(v) / max(self.count, 1) for k, v in self.extra.items()})
        self.reset()
        return row


class JsonLog:
    """``log.jsonl`` on the main process: truncated on a fresh run, cut back to the step on a resume."""

    def __init__(self, path: Path, keep_until: int, enabled: bool):
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        kept = []
        if keep_until and path.is_file():
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= keep_until:
                        kept.append(line)
                except ValueError:
                    continue  # a line cut by a kill
        write_bytes(path, "".join(line + "\n" for line in kept).encode())

    def write(self, row: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")

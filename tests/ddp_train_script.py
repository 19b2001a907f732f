"""Run by tests/test_trainer.py under ``torchrun --nproc_per_node 2``: 3 trainer steps on CPU.

Each process writes ``rank-<i>.json`` with a hash of its final weights and the indices it drew.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer_fixtures import Points, linear, step_fn  # noqa: E402

from pipelines.common.processes import end_process_group  # noqa: E402
from pipelines.training.train_config import TrainConfig  # noqa: E402
from pipelines.training.trainer import Trainer  # noqa: E402


def main(out: str) -> None:
    seen: list = []
    # different initial weights per process: the trainer must still end with identical ones
    import os

    net = linear(seed=int(os.environ.get("RANK", "0")))
    cfg = TrainConfig(steps=3, lr=0.05, batch_size=2, save_every=2, log_every=1, ema=True, seed=5)
    trainer = Trainer(cfg, {"net": net}, out)
    result = trainer.fit(Points(12), step_fn(noise=0.1, seen=seen))
    weights = b"".join(p.detach().cpu().numpy().tobytes() for p in trainer.unwrapped["net"].parameters())
    rank = trainer.accelerator.process_index
    Path(out, f"rank-{rank}.json").write_text(json.dumps({
        "hash": hashlib.sha256(weights).hexdigest(), "seen": seen, "steps": result["steps"],
        "num_processes": trainer.accelerator.num_processes, "distributed": str(trainer.accelerator.distributed_type),
    }))
    end_process_group()


if __name__ == "__main__":
    main(sys.argv[1])

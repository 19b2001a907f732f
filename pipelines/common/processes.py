"""Scene sharding across processes for ``evaluate``, ``reconstruct`` and ``compare``.

Under ``torchrun`` or ``accelerate launch`` every process takes every n-th scene (round robin,
so the split is the same on every rerun), writes that scene's files, and waits for the others;
the main process then gathers every scene from the files. A single plain process is the
special case n = 1. Scene results depend only on the scene and the seed, never on which
process ran it, so the gathered results equal a one-process run's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from pipelines.common.runtime import resolve_device
from scenes.errors import UserError

# A process that finds its scenes finished waits for the others at the barrier: allow long runs.
BARRIER_TIMEOUT = timedelta(hours=48)


@dataclass
class Processes:
    """This process's place among the launched ones, and the device it uses."""

    index: int
    count: int
    device: torch.device
    _state: object | None = None  # accelerate.PartialState when launched as several processes

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def mine(self, items: list) -> list:
        """The items this process handles: every ``count``-th from position ``index``."""
        return items[self.index::self.count]

    def wait(self) -> None:
        """Barrier: returns once every process has reached it (no-op for one process)."""
        if self._state is not None:
            self._state.wait_for_everyone()


def end_process_group() -> None:
    """Leave the process group cleanly once every process is done (no-op when none was joined).

    A process that exits with its gloo group still alive can abort in the group's destructor
    ("terminate called without an active exception") and fail the whole torchrun launch.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def launched_processes() -> int:
    """How many processes the launcher started (WORLD_SIZE; 1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def processes(device: str = "auto") -> Processes:
    """This process's share: joins the process group when launched by torchrun/accelerate.

    ``device=auto`` gives each process its own GPU (cuda:LOCAL_RANK) when there are GPUs, else the CPU.
    """
    if launched_processes() == 1:
        return Processes(0, 1, resolve_device(device))
    from accelerate import PartialState

    cpu = not torch.cuda.is_available()
    state = PartialState(cpu=cpu, timeout=BARRIER_TIMEOUT)
    if device == "auto":
        dev = state.device
    elif device.startswith("cuda") and state.num_processes > 1 and device != "cuda":
        raise UserError(f"device={device} pins every process to one GPU; use device=auto or device=cuda "
                        "so each process takes its own (cuda:LOCAL_RANK)")
    else:
        dev = state.device if device == "cuda" else resolve_device(device)
    return Processes(state.process_index, state.num_processes, dev, state)

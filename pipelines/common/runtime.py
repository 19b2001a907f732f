"""Run-time helpers shared by every command: devices, output folders, machine description."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from scenes.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; an unavailable CUDA device is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for but CUDA is not available here (use device=cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (cpu, cuda, cuda:N or auto)") from None


def output_dir(command: str, out: str | None, run_name: str) -> Path:
    """``out`` if given, else ``outputs/<command>/<run_name>``; created."""
    path = Path(out) if out else Path("outputs") / command / run_name
    path.mkdir(parents=True, exist_ok=True)
    return path


def machine_info() -> dict:
    """What the numbers were measured on."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info

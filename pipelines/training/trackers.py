"""Optional experiment trackers for training (``train.log_with=tensorboard|wandb``), through accelerate.

The tracker gets what ``log.jsonl`` gets (every scalar of each log row, at its step) and the
periodic sample grid (``<out>/samples/step-<step>.png``) when a sampler writes one. TensorBoard
writes under ``<out>/tensorboard/``; wandb follows its own settings (``WANDB_MODE``, ``wandb
login``), project = the run folder's name. A tracker whose package is missing is skipped with one
warning line: training goes on with ``log.jsonl`` alone.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}  # name -> (module, pip extra)
TENSORBOARD_DIR = "tensorboard"


def check_name(name: str | None) -> None:
    """Refuse an unknown tracker name, naming the key (from :func:`pipelines.training.train_config.validate`)."""
    from scenes.errors import UserError

    if name is not None and name not in TRACKERS:
        raise UserError(f"train.log_with must be one of {', '.join(TRACKERS)} or null, got {name!r}")


def usable(name: str | None, main_process: bool = True) -> str | None:
    """``name`` when its package is importable; otherwise None, with one warning line (main process)."""
    if name is None:
        return None
    module, extra = TRACKERS[name]
    if importlib.util.find_spec(module) is not None:
        return name
    if main_process:
        print(f"warning: train.log_with={name} needs the {module} package (pip install 'sparsefusion[{extra}]' "
              f"or pip install {module}); logging to log.jsonl only", file=sys.stderr)
    return None


def accelerator_kwargs(name: str | None, out: Path) -> dict:
    """Extra ``Accelerator`` arguments for a tracker: TensorBoard's folder."""
    return {"project_dir": str(out / TENSORBOARD_DIR)} if name == "tensorboard" else {}


def start(accelerator, out: Path) -> None:
    """Open the run (project = the output folder's name) with the run's config.yaml as hyperparameters."""
    if not accelerator.log_with:
        return
    accelerator.init_trackers(out.name, config=_hyperparameters(out / "config.yaml"))


def log_row(accelerator, row: dict) -> None:
    """A log.jsonl row's scalars at its step."""
    if accelerator.log_with:
        accelerator.log({k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))},
                        step=int(row["step"]))


def log_sample(accelerator, out: Path, step: int) -> None:
    """The sample grid the sampler wrote for ``step``, if it wrote one."""
    path = out / "samples" / f"step-{step:07d}.png"
    if not accelerator.log_with or not path.is_file() or not accelerator.is_main_process:
        return
    import numpy as np

    from scenes.io import read_image

    grid = (read_image(path, "RGB") * 255).round().astype(np.uint8)[None]  # (1, H, W, 3)
    for tracker in accelerator.trackers:
        kwargs = {"dataformats": "NHWC"} if tracker.name == "tensorboard" else {}
        tracker.log_images({"samples": grid}, step=step, **kwargs)


def finish(accelerator) -> None:
    """Flush and close the trackers (not ``end_training``: that also ends the process group)."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers = []


def _hyperparameters(config_yaml: Path) -> dict:
    """The run's config flattened to dotted keys of str/int/float/bool (what every tracker accepts)."""
    if not config_yaml.is_file():
        return {}
    from omegaconf import OmegaConf

    flat: dict = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        else:
            key = prefix[:-1]
            flat[key] = value if isinstance(value, (int, float, bool, str)) else str(value)

    walk("", OmegaConf.to_container(OmegaConf.load(config_yaml)))
    return flat

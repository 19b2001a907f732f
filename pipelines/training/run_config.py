"""A training run's ``config.yaml``: written at the start, and checked on resume against the run it continues.

``--resume`` rebuilds the config from the preset and the command line, as a fresh run does. A run
resumed with other settings (a different learning rate, batch size or model) would silently not
be the run it continues, so :func:`save_run_config` refuses the difference, naming each key. Keys
that only say how long to run or how often to log, checkpoint and validate may change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pipelines.common.config import save_config, to_yaml, with_new_names
from pipelines.training.trainer import resume_checkpoint
from scenes.errors import UserError

MAY_CHANGE_ON_RESUME = frozenset({
    "out", "train.resume", "train.steps", "train.init_from", "train.log_every", "train.val_every",
    "train.save_every", "train.keep_last", "train.log_with", "train.preview_every", "warm_start",
})
"""Dotted keys a resumed run may set differently: duration, logging, preview and checkpoint cadence,
and where the first step's weights came from (``init_from``, ``warm_start``: the checkpoint's replace them)."""


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key → leaf value of a nested dict."""
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flat(value, f"{prefix}{key}."))
    return flat


def config_changes(saved_yaml: str, config: Any) -> list[str]:
    """``key: saved → new`` for every key, outside :data:`MAY_CHANGE_ON_RESUME`, that differs.

    The saved keys are read under their current names first (a run saved before a key was renamed
    is the same run)."""
    saved_tree = OmegaConf.to_container(OmegaConf.create(saved_yaml))
    saved = _flat(with_new_names(saved_tree, type(config), " in the saved run's config.yaml"))
    new = _flat(OmegaConf.to_container(OmegaConf.create(to_yaml(config))))
    keys = sorted((saved.keys() | new.keys()) - MAY_CHANGE_ON_RESUME)
    return [f"{k}: {saved.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
            for k in keys if saved.get(k, "<absent>") != new.get(k, "<absent>")]


def save_run_config(config: Any, out: str | Path) -> Path:
    """Write ``out/config.yaml`` of a ``train-*`` config; on a resume, refuse settings that differ from the saved run's."""
    path = Path(out) / "config.yaml"
    if resume_checkpoint(config.train.resume, out) is not None and path.is_file():
        changes = config_changes(path.read_text(), config)
        if changes:
            raise UserError(f"train.resume: the settings differ from the run in {out} ({path}): "
                            + "; ".join(changes)
                            + ". Resume with the run's settings, or start a new run with --init-from <run>/model")
    return save_config(config, out)

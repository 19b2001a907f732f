"""Training model configs are the models' constructor keywords: one name per hyperparameter.

Each ``*ModelConfig`` of a training module holds exactly the keyword-only parameters of its
model's constructor (a diffusers model saves them as ``config.json``), minus the keys another
part of the training config decides (``image_size`` is ``data.image_size``), plus init-only
options that never reach the model's config (``backbone_weights``). :func:`model_kwargs`
builds the constructor's keywords and refuses any drift between the two.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any


def constructor_keys(cls: type | Callable) -> set[str]:
    """The keyword-only parameters of a class's constructor (or a factory function)."""
    fn = cls.__init__ if isinstance(cls, type) else cls
    params = inspect.signature(inspect.unwrap(fn)).parameters.values()
    return {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def constructor_defaults(cls: type | Callable) -> dict[str, Any]:
    """Default of each keyword-only constructor parameter that has one."""
    fn = cls.__init__ if isinstance(cls, type) else cls
    params = inspect.signature(inspect.unwrap(fn)).parameters.values()
    return {p.name: p.default for p in params
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty}


def model_kwargs(model_cfg: Any, cls: type | Callable, derived: dict[str, Any] | None = None,
                 init_only: tuple[str, ...] = ()) -> dict[str, Any]:
    """``cls``'s constructor keywords: the config's fields (same names) less ``init_only``, plus ``derived``."""
    kwargs = {f.name: getattr(model_cfg, f.name) for f in dataclasses.fields(model_cfg) if f.name not in init_only}
    kwargs.update(derived or {})
    want = constructor_keys(cls)
    if set(kwargs) != want:
        raise TypeError(f"{type(model_cfg).__name__} does not match {getattr(cls, '__name__', cls)}'s keywords: "
                        f"missing {sorted(want - set(kwargs))}, unknown {sorted(set(kwargs) - want)}")
    return kwargs

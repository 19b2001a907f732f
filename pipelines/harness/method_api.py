"""What a novel-view method implements and how it registers itself (the harness's side is ``methods``).

A method sees only the input views and the target cameras of a scene, never the target images,
and returns one image per target camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor

from scenes.cameras import Cameras
from scenes.co3d import Views
from scenes.errors import UserError

OptionsT = TypeVar("OptionsT")


@dataclass
class MethodContext:
    """What a method factory may use: device, checkpoint folder, seed, the user's method options."""

    device: torch.device
    checkpoint: str | None = None
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    """The method's options by field name (``evaluate options.steps=50``); a factory receives them
    all, its registered defaults filled in by ``build_method``."""


@dataclass(frozen=True)
class NoOptions:
    """The options of a method that takes none."""


def method_options(context: MethodContext, defaults: OptionsT) -> OptionsT:
    """``defaults`` (a dataclass) with the context's options applied; an unknown option is a UserError."""
    known = [f.name for f in fields(defaults)]
    unknown = sorted(set(context.options) - set(known))
    if unknown:
        raise UserError(f"unknown method option(s) {', '.join(unknown)} (this method takes: {', '.join(known)})")
    return replace(defaults, **context.options)


@dataclass
class Prediction:
    """What a method returns for one scene: its images and what it knows beyond them."""

    images: Tensor
    """(T, 3, H, W) in [0, 1], one per target camera, at the targets' size."""
    opacity: Tensor | None = None
    """(T, 1, H, W) in [0, 1] from methods that render opacity: the silhouette IoU uses it (opacity
    > 0.5) instead of the image (any channel > 0.1)."""
    stats: dict[str, int | float] = field(default_factory=dict)
    """Counts the harness adds to the scene's row (e.g. ``unet_evaluations``)."""


class Method(Protocol):
    """A novel-view method: input views + target cameras -> a :class:`Prediction`."""

    name: str

    def predict(self, inputs: Views, targets: Cameras) -> Prediction:
        """The targets' images (and opacity, stats) from the inputs alone."""
        ...


@runtime_checkable
class SceneMethod(Method, Protocol):
    """A method that builds a 3D scene in ``predict``: that scene can be rendered anywhere (turntables)."""

    def render_scene(self, cameras: Cameras) -> Tensor:
        """Images (N, 3, H, W) in [0, 1] of the last ``predict``'s scene at any cameras."""
        ...


REGISTRY: dict[str, Callable[[MethodContext], Method]] = {}
OPTIONS: dict[str, Any] = {}  # name -> the method's options dataclass with its defaults


def register(name: str, options: Any = NoOptions()):
    """Decorator registering a method factory under ``name`` with its options' defaults (a dataclass).

    A name registered twice is an error.
    """

    def wrap(factory):
        if name in REGISTRY:
            raise ValueError(f"a method named {name!r} is already registered ({REGISTRY[name].__module__})")
        REGISTRY[name], OPTIONS[name] = factory, options
        return factory

    return wrap


def at_target_size(images: Tensor, targets: Cameras) -> Tensor:
    """Images (T, 3, h, w) resized bilinearly to the targets' size and clamped to [0, 1]."""
    if images.shape[-2:] != (targets.height, targets.width):
        images = torch.nn.functional.interpolate(images, size=(targets.height, targets.width), mode="bilinear",
                                                 align_corners=False)
    return images.clamp(0, 1)

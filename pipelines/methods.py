"""The method interface of the evaluation harness, the registry, and the ``nearest-view`` floor.

A method sees only the input views and the target cameras of a scene, never the target images,
and returns one image per target camera.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import Tensor

from scenes.cameras import Cameras
from scenes.co3d import Views
from scenes.errors import UserError


@dataclass
class MethodContext:
    """What a method factory may use: device, checkpoint folder, seed."""

    device: torch.device
    checkpoint: str | None = None
    seed: int = 0


class Method(Protocol):
    """A novel-view method: input views + target cameras -> images."""

    name: str

    def predict(self, inputs: Views, targets: Cameras) -> Tensor:
        """Images (T, 3, H, W) in [0, 1], one per target camera, at the targets' size.

        A method may set ``last_stats`` (e.g. ``{"unet_evaluations": n}``): the harness adds
        it to the scene's row. A method that renders opacity sets ``last_opacity`` (T, 1, H, W)
        in [0, 1] at the targets' size in every ``predict``: the silhouette IoU uses it (opacity
        > 0.5) instead of the image (any channel > 0.1). A 3D method also has ``render_scene(cameras) -> images``: the
        3D scene it built in its last ``predict``, rendered at any cameras (turntables).
        """
        ...


_REGISTRY: dict[str, Callable[[MethodContext], Method]] = {}


def register(name: str):
    """Decorator registering a method factory under ``name``."""

    def wrap(factory):
        _REGISTRY[name] = factory
        return factory

    return wrap


def _load_plugins() -> None:
    """Import the modules that register the learned methods (lazily: they pull in diffusers)."""
    from . import baseline_methods, sparsefusion_methods, vldm_methods  # noqa: F401


def available_methods() -> list[str]:
    """Names of all registered methods."""
    _load_plugins()
    return sorted(_REGISTRY)


def build_method(name: str, context: MethodContext) -> Method:
    """Instantiate a registered method; an unknown name is a UserError listing the known ones."""
    _load_plugins()
    if name not in _REGISTRY:
        raise UserError(f"unknown method {name!r} (available: {', '.join(available_methods())})")
    return _REGISTRY[name](context)


def at_target_size(images: Tensor, targets: Cameras) -> Tensor:
    """Images (T, 3, h, w) resized bilinearly to the targets' size and clamped to [0, 1]."""
    if images.shape[-2:] != (targets.height, targets.width):
        images = torch.nn.functional.interpolate(images, size=(targets.height, targets.width), mode="bilinear",
                                                 align_corners=False)
    return images.clamp(0, 1)


class NearestView:
    """Each target is the input view whose optical axis is closest in direction (no warping)."""

    name = "nearest-view"

    def predict(self, inputs: Views, targets: Cameras) -> Tensor:
        sim = targets.forward.to(inputs.cameras.R) @ inputs.cameras.forward.T  # (T, V)
        nearest = sim.argmax(dim=1)
        return at_target_size(inputs.images[nearest], targets)


@register("nearest-view")
def _nearest_view(context: MethodContext) -> Method:
    return NearestView()

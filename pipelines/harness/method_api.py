"""What a novel-view method implements and how it registers itself (the harness's side is ``methods``).

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


REGISTRY: dict[str, Callable[[MethodContext], Method]] = {}


def register(name: str):
    """Decorator registering a method factory under ``name``; a name registered twice is an error."""

    def wrap(factory):
        if name in REGISTRY:
            raise ValueError(f"a method named {name!r} is already registered ({REGISTRY[name].__module__})")
        REGISTRY[name] = factory
        return factory

    return wrap


def at_target_size(images: Tensor, targets: Cameras) -> Tensor:
    """Images (T, 3, h, w) resized bilinearly to the targets' size and clamped to [0, 1]."""
    if images.shape[-2:] != (targets.height, targets.width):
        images = torch.nn.functional.interpolate(images, size=(targets.height, targets.width), mode="bilinear",
                                                 align_corners=False)
    return images.clamp(0, 1)

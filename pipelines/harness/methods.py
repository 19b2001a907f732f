"""The method registry's lookups, with the learned methods loaded on demand, and the ``nearest-view`` floor.

Implementations register themselves with :func:`pipelines.harness.method_api.register`; this module
re-exports that interface (``Method``, ``SceneMethod``, ``Prediction``, ``MethodContext``,
``at_target_size``) for the harness.
"""

from __future__ import annotations

from pipelines.harness.method_api import (REGISTRY, Method, MethodContext, NoOptions, Prediction, SceneMethod,
                                          at_target_size, method_options, register)
from scenes.cameras import Cameras
from scenes.co3d import Views
from scenes.errors import UserError

__all__ = ["Method", "MethodContext", "Prediction", "SceneMethod", "at_target_size", "available_methods",
           "build_method", "register"]


def _load_plugins() -> None:
    """Import the modules that register the learned methods (lazily: they pull in diffusers)."""
    from pipelines.harness import baseline_methods, sparsefusion_methods, vldm_methods  # noqa: F401


def available_methods() -> list[str]:
    """Names of all registered methods."""
    _load_plugins()
    return sorted(REGISTRY)


def build_method(name: str, context: MethodContext) -> Method:
    """Instantiate a registered method; an unknown name is a UserError listing the known ones."""
    _load_plugins()
    if name not in REGISTRY:
        raise UserError(f"unknown method {name!r} (available: {', '.join(available_methods())})")
    return REGISTRY[name](context)


class NearestView:
    """Each target is the input view whose optical axis is closest in direction (no warping)."""

    name = "nearest-view"

    def predict(self, inputs: Views, targets: Cameras) -> Prediction:
        sim = targets.forward.to(inputs.cameras.R) @ inputs.cameras.forward.T  # (T, V)
        nearest = sim.argmax(dim=1)
        return Prediction(at_target_size(inputs.images[nearest], targets))


@register("nearest-view")
def _nearest_view(context: MethodContext) -> Method:
    method_options(context, NoOptions())
    return NearestView()

"""The method registry's lookups, with the learned methods loaded on demand, and the ``nearest-view`` floor.

Implementations register themselves with :func:`pipelines.harness.method_api.register`; this module
re-exports that interface (``Method``, ``SceneMethod``, ``Prediction``, ``MethodContext``,
``at_target_size``) for the harness.
"""

from __future__ import annotations

from dataclasses import asdict, replace

from pipelines.harness.method_api import (OPTIONS, REGISTRY, Method, MethodContext, Prediction, SceneMethod,
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
    """Instantiate a registered method with its options resolved; an unknown name or option is a UserError."""
    _load_plugins()
    if name not in REGISTRY:
        raise UserError(f"unknown method {name!r} (available: {', '.join(available_methods())})")
    options = asdict(method_options(context, OPTIONS[name]))  # checked before any model loads
    return REGISTRY[name](replace(context, options=options))


class NearestView:
    """Each target is the input view whose optical axis is closest in direction (no warping)."""

    name = "nearest-view"

    def predict(self, inputs: Views, targets: Cameras) -> Prediction:
        sim = targets.forward.to(inputs.cameras.R) @ inputs.cameras.forward.T  # (T, V)
        nearest = sim.argmax(dim=1)
        return Prediction(at_target_size(inputs.images[nearest], targets))


@register("nearest-view")
def _nearest_view(context: MethodContext) -> Method:
    return NearestView()

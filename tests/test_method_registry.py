"""The method registry: one factory per name, lookups that name what exists."""

from __future__ import annotations

import pytest

from pipelines.harness.method_api import REGISTRY, register
from pipelines.harness.methods import MethodContext, available_methods, build_method
from scenes.errors import UserError


def test_a_name_registered_twice_is_refused():
    assert "nearest-view" in REGISTRY
    with pytest.raises(ValueError, match="already registered"):
        register("nearest-view")(lambda context: None)
    assert REGISTRY["nearest-view"].__module__ == "pipelines.harness.methods"  # the first one kept


def test_lookups_load_the_learned_methods_and_name_the_known_ones():
    import torch

    assert {"eft", "vldm", "pixelnerf", "dfm", "sparsefusion-fast"} <= set(available_methods())
    with pytest.raises(UserError, match="available: .*nearest-view"):
        build_method("nearest-veiw", MethodContext(torch.device("cpu")))

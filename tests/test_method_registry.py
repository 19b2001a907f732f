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


def test_the_methods_that_build_a_3d_scene_say_so():
    """SceneMethod (render_scene) is declared by the 3D methods and by no image method."""
    from pipelines.harness.baseline_methods import DFMMethod, PixelNeRFMethod
    from pipelines.harness.methods import NearestView, SceneMethod
    from pipelines.harness.sparsefusion_methods import SparseFusionMethod
    from pipelines.harness.vldm_methods import EFTMethod, VLDMSampleMethod

    def bare(cls):  # an instance without loading weights
        return object.__new__(cls)

    assert all(isinstance(bare(c), SceneMethod) for c in (PixelNeRFMethod, DFMMethod, SparseFusionMethod))
    assert not any(isinstance(bare(c), SceneMethod) for c in (NearestView, EFTMethod, VLDMSampleMethod))


def test_nearest_view_returns_a_prediction_of_the_nearest_input():
    import torch

    from pipelines.harness.methods import NearestView, Prediction
    from scenes.cameras import look_at
    from scenes.co3d import Views

    eyes = torch.tensor([[3.0, 0, 0], [0, 3, 0], [-3, 0, 0]])
    K = torch.tensor([[8.0, 0, 4], [0, 8, 4], [0, 0, 1]])
    cams = look_at(eyes, torch.zeros(3), torch.tensor([0, 0, 1.0]), K, 8, 8)
    images = torch.rand(2, 3, 8, 8)
    ones = torch.ones(2, 1, 8, 8)
    inputs = Views(images, ones, ones, cams[[0, 1]], [0, 1], ["a", "b"])
    out = NearestView().predict(inputs, cams[[2, 1]])  # the target opposite input 0 is nearest input 1's
    assert isinstance(out, Prediction) and out.opacity is None and out.stats == {}
    assert torch.equal(out.images, images[[1, 1]])


def test_method_options_come_from_the_config_and_unknown_ones_are_refused():
    import torch

    from pipelines.harness.method_api import method_options
    from pipelines.harness.vldm_methods import VLDM_PAPER, SamplingOptions

    cpu = torch.device("cpu")
    assert method_options(MethodContext(cpu), SamplingOptions()) == SamplingOptions(steps=25, solver="ddim")
    opts = method_options(MethodContext(cpu, options={"steps": 50, "guidance": 2.0}), SamplingOptions())
    assert (opts.steps, opts.solver, opts.guidance) == (50, "ddim", 2.0)
    assert method_options(MethodContext(cpu, options={"steps": 100}), VLDM_PAPER).solver == "ddpm"
    with pytest.raises(UserError, match="unknown method option.*stepz.*takes: steps"):
        build_method("dfm", MethodContext(cpu, options={"stepz": 3}))  # refused before any model loads
    with pytest.raises(UserError, match="unknown method option"):
        build_method("nearest-view", MethodContext(cpu, options={"steps": 3}))


def test_compare_refuses_options_of_a_method_it_does_not_run():
    from pipelines.common.config import load_config
    from pipelines.harness.compare import CompareConfig, compare

    cfg = load_config(CompareConfig, None, ["methods=[nearest-view]", "options.vldm.steps=5"])
    with pytest.raises(UserError, match="not compared: vldm"):
        compare(cfg)

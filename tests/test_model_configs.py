"""Each training ModelConfig holds its model's constructor keywords under the same names (and defaults)."""

import dataclasses
import json
from pathlib import Path

import pytest

from baselines.dfm import DFM
from baselines.pixelnerf import PixelNeRF
from pipelines.training.dfm import DFMModelConfig
from pipelines.training.model_config import (
    constructor_defaults,
    constructor_keys,
    model_kwargs,
)
from pipelines.training.pixelnerf import INIT_ONLY, PixelNeRFModelConfig
from pipelines.training.vae import VAEModelConfig
from pipelines.training.vldm import EFTConfig, UNetConfig
from vldm.autoencoder import small_vae
from vldm.diffusion import make_unet
from vldm.eft import EpipolarFeatureTransformer

ROOT = Path(__file__).resolve().parents[1]

# (training ModelConfig, constructor, keys set from elsewhere in the training config, init-only fields)
CASES = [
    (DFMModelConfig, DFM, {"image_size"}, ()),
    (PixelNeRFModelConfig, PixelNeRF, {"image_size"}, INIT_ONLY),
    (VAEModelConfig, small_vae, {"sample_size"}, ()),
    (EFTConfig, EpipolarFeatureTransformer, set(), ()),
    (UNetConfig, make_unet, set(), ()),
]


@pytest.mark.parametrize(("cfg", "cls", "derived", "init_only"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_model_config_fields_are_the_constructor_keywords(cfg, cls, derived, init_only):
    fields = {f.name for f in dataclasses.fields(cfg)} - set(init_only)
    assert fields | derived == constructor_keys(cls)
    assert not fields & derived  # a derived key is never also a model field
    defaults, mine = constructor_defaults(cls), dataclasses.asdict(cfg())
    for name in fields:  # the same default in both places (a tuple default reads as a list in the config)
        assert _plain(mine[name]) == _plain(defaults[name]), name


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize(("folder", "cls"), [("dfm", DFM), ("pixelnerf", PixelNeRF)])
def test_saved_model_config_keys_are_the_constructor_keywords(folder, cls):
    saved = json.loads((ROOT / "checkpoints" / "demo" / folder / "model" / "config.json").read_text())
    assert {k for k in saved if not k.startswith("_")} == constructor_keys(cls)


def test_saved_eft_and_unet_configs_use_the_training_names():
    eft = json.loads((ROOT / "checkpoints/demo/vldm/model/eft/config.json").read_text())
    assert {k for k in eft if not k.startswith("_")} == {f.name for f in dataclasses.fields(EFTConfig)}
    unet = json.loads((ROOT / "checkpoints/demo/vldm/model/unet/config.json").read_text())
    assert {f.name for f in dataclasses.fields(UNetConfig)} <= set(unet)


def test_constructors_are_keyword_only():
    for cls in (DFM, PixelNeRF, EpipolarFeatureTransformer):
        with pytest.raises(TypeError):
            cls(32)


def test_model_kwargs_refuses_a_config_that_drifted():
    @dataclasses.dataclass
    class Drifted:
        width: int = 8
        depth: int = 2

    with pytest.raises(TypeError, match="missing .*unknown \\['depth'\\]"):
        model_kwargs(Drifted(), PixelNeRF)
    kwargs = model_kwargs(PixelNeRFModelConfig(width=8), PixelNeRF, {"image_size": 32}, init_only=INIT_ONLY)
    assert kwargs["width"] == 8 and kwargs["image_size"] == 32 and "backbone_weights" not in kwargs

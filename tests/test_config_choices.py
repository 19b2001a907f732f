"""Names of modes, solvers, backends and samplers are checked when a config loads; derived and renamed keys."""

from typing import get_args

import pytest

from distill.field import BACKENDS
from distill.sampler import SAMPLERS
from pipelines.common.config import load_config, preset_path
from pipelines.reconstruction.fit import MODES, TeacherSolver
from pipelines.reconstruction.reconstruct import ReconstructConfig
from pipelines.training.vldm import TrainVLDMConfig
from scenes.errors import UserError
from vldm import diffusion, teacher


def _load(*overrides):
    return load_config(ReconstructConfig, preset_path("reconstruct", "demo"), list(overrides))


@pytest.mark.parametrize(("override", "allowed"), [
    ("mode=sparsfusion", MODES),
    ("teacher.solver=dmp", ("ddim", "dpm", "plms-stochastic")),
    ("field.backend=cuda", BACKENDS),
    ("distill.sampler.name=occ", SAMPLERS),
    ("photometric.sampler.name=grid", SAMPLERS),
    ("distill.mode=multi", ("multistep", "sds")),
    ("circle_fit=every", ("inputs", "all")),
])
def test_a_misspelled_name_fails_at_load_naming_the_allowed_ones(override, allowed):
    key, bad = override.split("=")
    with pytest.raises(UserError, match=f"config key '{key}'") as err:
        load_config(ReconstructConfig, None, [override]) if key != "distill.mode" else _load(override)
    message = str(err.value)
    assert "\n" not in message and bad in message
    assert all(name in message for name in allowed), message


def test_allowed_names_load_and_keep_their_string_values():
    cfg = _load("mode=sds", "teacher.solver=plms-stochastic", "field.backend=torch", "distill.sampler.name=dense")
    assert (cfg.mode, cfg.teacher.solver, cfg.field.backend, cfg.distill.sampler.name) == (
        "sds", "plms-stochastic", "torch", "dense")
    assert type(cfg.mode) is str


def test_config_names_are_the_consumers_names():
    assert get_args(TeacherSolver) == teacher.SOLVERS  # the teacher refuses any other
    assert set(get_args(diffusion.Solver)) == set(diffusion.SOLVERS)
    assert MODES == ("sparsefusion", "sds", "photometric")


def test_distill_mode_is_refused_because_mode_sets_it(tmp_path):
    with pytest.raises(UserError, match="'distill.mode' cannot be given: .*set `mode` instead"):
        _load("distill.mode=sds")
    yaml = tmp_path / "r.yaml"
    yaml.write_text("mode: sds\ndistill:\n  mode: multistep\n  iters: 3\n")
    with pytest.raises(UserError, match=f"'distill.mode' in {yaml} cannot be given"):
        load_config(ReconstructConfig, yaml)
    assert load_config(ReconstructConfig, None, ["distill.iters=3"]).distill.mode == "multistep"


# the model section of a run saved before the VLDM's keys were nested (demo VLDM, 2026-12-03)
FLAT_VLDM_MODEL = """model:
  vae: checkpoints/demo/vae/model
  d_model: 64
  eft_layers: 2
  eft_heads: 1
  eft_ffn: 128
  eft_dropout: 0.1
  eft_samples: 20
  unet_channels: [64, 128, 128]
  unet_layers_per_block: 2
  unet_norm_groups: 32
  unet_head_dim: 32
"""


def test_renamed_vldm_keys_still_load_with_a_warning(tmp_path):
    saved = tmp_path / "config.yaml"
    saved.write_text("data:\n  image_size: 64\n" + FLAT_VLDM_MODEL)
    with pytest.warns(UserWarning, match="'model.eft_layers' is now 'model.eft.n_layers'"):
        old = load_config(TrainVLDMConfig, saved)
    new = load_config(TrainVLDMConfig, preset_path("train-vldm", "demo"))
    assert old.model == new.model and old.model.eft.n_layers == 2 and old.model.unet.attention_head_dim == 32
    with pytest.warns(UserWarning, match="'model.unet_head_dim' is now 'model.unet.attention_head_dim'"):
        cfg = load_config(TrainVLDMConfig, None, ["model.unet_head_dim=16"])
    assert cfg.model.unet.attention_head_dim == 16
    both = tmp_path / "v.yaml"
    both.write_text("model:\n  eft_layers: 2\n  eft:\n    n_layers: 3\n")
    with pytest.raises(UserError, match="old name of 'model.eft.n_layers', which is also given"):
        load_config(TrainVLDMConfig, both)


def test_the_preview_cadence_keeps_its_old_name_with_a_warning():
    from pipelines.training.pixelnerf import TrainPixelNeRFConfig

    with pytest.warns(UserWarning, match="'train.sample_every' is now 'train.preview_every'"):
        cfg = load_config(TrainPixelNeRFConfig, None, ["train.sample_every=3"])
    assert cfg.train.preview_every == 3

"""A resumed training run keeps the settings of the run it continues (config.yaml is checked)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from omegaconf import OmegaConf

from pipelines.common.config import to_yaml
from pipelines.training.run_config import config_changes, save_run_config
from pipelines.training.train_config import TrainConfig
from scenes.errors import UserError


@dataclass
class _Model:
    width: int = 8


@dataclass
class _RunConfig:
    model: _Model = field(default_factory=_Model)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str = "x"


def _checkpoint(folder):
    (folder / "checkpoint-5").mkdir(parents=True)
    (folder / "checkpoint-5" / "trainer_state.json").write_text("{}")


def test_a_resume_with_other_model_or_optimiser_settings_is_refused_naming_the_keys(tmp_path):
    save_run_config(_RunConfig(), tmp_path)
    _checkpoint(tmp_path)
    changed = _RunConfig(model=_Model(width=16), train=TrainConfig(lr=2e-4, resume="latest"))
    with pytest.raises(UserError) as err:
        save_run_config(changed, tmp_path)
    assert "model.width: 8 -> 16" in str(err.value) and "train.lr" in str(err.value)


def test_a_resume_may_change_duration_and_cadence_and_rewrites_config(tmp_path):
    save_run_config(_RunConfig(), tmp_path)
    _checkpoint(tmp_path)
    longer = _RunConfig(train=TrainConfig(steps=5000, val_every=7, resume="latest"), out="y")
    save_run_config(longer, tmp_path)
    assert "steps: 5000" in (tmp_path / "config.yaml").read_text()


def test_latest_with_no_checkpoint_yet_is_a_fresh_run_and_may_differ(tmp_path):
    save_run_config(_RunConfig(), tmp_path)
    save_run_config(_RunConfig(model=_Model(width=16), train=TrainConfig(resume="latest")), tmp_path)
    assert "width: 16" in (tmp_path / "config.yaml").read_text()


def test_config_changes_lists_added_and_removed_keys():
    saved = "model:\n  width: 8\n  depth: 2\ntrain:\n  lr: 0.001\n"
    changes = config_changes(saved, _RunConfig())
    assert any(c.startswith("model.depth: 2 -> '<absent>'") for c in changes)


def test_a_run_saved_under_old_key_names_is_the_same_run():
    from pipelines.training.vldm import TrainVLDMConfig

    config = TrainVLDMConfig()
    tree = OmegaConf.to_container(OmegaConf.create(to_yaml(config)))
    tree["model"]["d_model"] = tree["model"]["eft"].pop("d_model")  # the name before the nesting
    saved = OmegaConf.to_yaml(OmegaConf.create(tree))
    with pytest.warns(UserWarning, match="'model.d_model' is now 'model.eft.d_model'"):
        assert config_changes(saved, config) == []
    tree["model"]["d_model"] += 1
    with pytest.warns(UserWarning):
        assert config_changes(OmegaConf.to_yaml(OmegaConf.create(tree)), config)[0].startswith("model.eft.d_model")

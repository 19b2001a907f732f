"""Shipped files (presets, demo models): found from any folder, and every one of them packaged into the wheel."""

from pathlib import Path

import tomllib

from scenes.assets import ROOT, resolve, shipped

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_globs_cover_every_preset_and_demo_model_file():
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setup["package-dir"]["sparsefusion_assets"] == "."  # package-data globs are relative to the repository
    packaged = {p for pattern in setup["package-data"]["sparsefusion_assets"] for p in REPO.glob(pattern) if p.is_file()}
    needed = {p for p in (REPO / "configs").rglob("*.yaml")}
    needed |= {p for p in (REPO / "checkpoints" / "demo").glob("*/model/**/*") if p.is_file()}
    assert needed and needed <= packaged, sorted(str(p.relative_to(REPO)) for p in needed - packaged)
    assert {"vae", "vldm", "pixelnerf", "dfm"} <= {p.relative_to(REPO).parts[2] for p in packaged if "model" in p.parts}


def test_shipped_files_are_found_from_any_folder(tmp_path, monkeypatch):
    from pipelines.common.config import preset_path
    from vldm.autoencoder import load_vae

    monkeypatch.chdir(tmp_path)
    assert ROOT == REPO  # a source tree: the repository's own folders
    assert preset_path("reconstruct", "fast") == shipped("configs", "reconstruct", "fast.yaml")
    assert preset_path("reconstruct", "configs/reconstruct/fast.yaml").is_file()  # a path as the docs write them (docs/fidelity.md)
    vae = resolve("checkpoints/demo/vae/model")
    assert vae.is_absolute() and (vae / "config.json").is_file()
    assert load_vae("checkpoints/demo/vae/model").config.latent_channels > 0  # what the train-vldm presets name


def test_a_path_in_the_working_folder_wins_over_the_shipped_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints" / "demo" / "vae").mkdir(parents=True)
    assert resolve("checkpoints/demo/vae") == Path("checkpoints/demo/vae")
    assert resolve("elsewhere/model") == Path("elsewhere/model")  # not a shipped name: as given
    assert resolve("checkpoints/demo/nothing") == Path("checkpoints/demo/nothing")  # missing everywhere: as given

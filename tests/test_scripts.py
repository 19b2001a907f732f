"""The repository's measurement scripts (``scripts/``) on outputs written here."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_least_seen_silhouette_reads_the_denoised_targets_area(tmp_path, capsys):
    script = _load("dfm_least_seen_silhouette")
    scenes = tmp_path / "dfm" / "scenes"
    scenes.mkdir(parents=True)
    for name, areas, k in (("obj_800", [0.2, 0.9, 0.5], 1), ("obj_801", [1.0, 0.4, 0.6], 2)):
        (scenes / f"{name}.json").write_text(json.dumps({"per_target": {"silhouette_area": areas},
                                                         "denoised_target": k}))
    assert script.least_seen_areas(tmp_path / "dfm") == {"obj_800": 0.9, "obj_801": 0.6}
    assert script.main([str(tmp_path / "dfm")]) == 0
    assert "within 25% of the true area: 1/2" in capsys.readouterr().out
    assert script.main([str(tmp_path / "none")]) == 1


def test_hash_grid_bench_without_nerfstudio_says_how_to_install_it(monkeypatch):
    import pytest

    script = _load("bench_hash_grid")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nerfstudio" else real(name, *a))
    with pytest.raises(SystemExit, match="pip install --no-deps nerfstudio"):
        script.nerfstudio_encoding(script.GRIDS["fast"])
    assert script.GRIDS["paper"].finest_resolution == 3072 and script.GRIDS["fast"].n_levels == 8

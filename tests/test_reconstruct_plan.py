"""``sparsefusion reconstruct`` without --config: the preset fits the device and the first line says what runs."""

import yaml
from test_reconstruct import TINY, model_and_data  # noqa: F401 (fixture)

from pipelines.cli import main
from pipelines.common.config import load_config, preset_path
from pipelines.reconstruction.plan import default_preset, plan_line, unet_evaluations_per_scene
from pipelines.reconstruction.reconstruct import ReconstructConfig


def _cfg(preset=None, *overrides):
    return load_config(ReconstructConfig, preset_path("reconstruct", preset) if preset else None, list(overrides))


def test_default_preset_is_fast_on_a_cpu_and_paper_on_cuda():
    assert default_preset(_cfg(None, "device=cpu")) == "fast"
    assert default_preset(_cfg(None, "device=cuda")) == "paper"
    assert default_preset(_cfg(None, "device=cuda:1")) == "paper"


def test_plan_line_names_preset_iterations_cost_and_time():
    line = plan_line(_cfg("paper", "device=cpu"), "paper", False)
    assert "preset paper" in line and "3000 iterations" in line and "76,222 UNet evaluations" in line
    assert "sampler dense 64+64, hash grid torch" in line
    assert "about 71 min per 64² scene on a 2-core CPU (use --config fast for minutes)" in line
    assert "40 UNet evaluations" in plan_line(_cfg("fast", "device=cpu"), "fast", True)
    gpu = plan_line(_cfg("paper", "device=cuda"), "paper", True)
    assert "the default on CUDA" in gpu and "not measured on GPUs yet" in gpu
    assert unet_evaluations_per_scene(_cfg("demo")) == 100 * 5
    assert unet_evaluations_per_scene(_cfg("sds")) == 100


def test_reconstruct_without_config_runs_fast_on_a_cpu_and_says_so_first(model_and_data, tmp_path, capsys):
    folder, root = model_and_data
    no_preset = [a for a in TINY if a not in ("--config", "demo")]
    assert main(["reconstruct", "--checkpoint", str(folder), "--data", str(root), "--category", "toys", "--views", "2",
                 "--image-size", "16", "--out", str(tmp_path / "r"), "--device", "cpu", *no_preset,
                 "output.mesh=false"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("sparsefusion reconstruct: preset fast (the default on a CPU; --config to choose)")
    assert "6 iterations" in first and "per 16² scene on a 2-core CPU" in first
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["teacher"]["solver"] == "dpm" and saved["distill"]["reuse_target"] == 5  # fast's own keys

"""End-to-end CLI tests on tiny data, and every clear-error path (one line, exit code 2)."""

import gzip
import json
import subprocess
import sys

import pytest

from conftest import write_sphere_dataset
from pipelines.cli import main


@pytest.fixture
def sphere_root(tmp_path):
    write_sphere_dataset(tmp_path / "data", n_seq=2, n_frames=10)
    return tmp_path / "data"


def _eval_args(root, out, *extra):
    return ["evaluate", "--method", "nearest-view", "--data", str(root), "--category", "toys",
            "--subset", "fewview_dev", "--split", "test", "--views", "2", "--image-size", "16",
            "--out", str(out), *extra]


def test_evaluate_nearest_view_writes_metrics_and_resumes(sphere_root, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(_eval_args(sphere_root, out, "--max-scenes", "2")) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["scenes"] == 2 and m["method"] == "nearest-view"
    assert 5 < m["mean"]["psnr"] < 60 and 0 < m["mean"]["ssim"] <= 1
    assert m["mean"]["psnr_fg"] < m["mean"]["psnr"]  # the background is free for any method
    assert m["availability"]["lpips"] != "ok" or isinstance(m["mean"]["lpips"], float)
    if m["availability"]["lpips"] != "ok":
        assert m["mean"]["lpips"]["available"] is False and "weights" in m["mean"]["lpips"]["reason"]
    for row in m["per_scene"]:
        assert len(row["targets"]) == 8 and not set(row["inputs"]) & set(row["targets"])
        assert row["silhouette_from"] == "image" and 0 <= row["silhouette_iou"] <= 1
    assert (out / "config.yaml").is_file() and "| nearest-view |" in (out / "metrics.md").read_text()
    assert (out / "metrics.md").read_text() in capsys.readouterr().out  # the table, printed
    # a rerun resumes: the scene files are reused, the numbers are the same
    stamp = (out / "scenes" / "seq_0.json").stat().st_mtime_ns
    assert main(_eval_args(sphere_root, out, "--max-scenes", "2")) == 0
    assert (out / "scenes" / "seq_0.json").stat().st_mtime_ns == stamp
    assert json.loads((out / "metrics.json").read_text())["mean"]["psnr"] == pytest.approx(m["mean"]["psnr"])


def test_show_config_lists_documented_keys(capsys):
    assert main(["evaluate", "--show-config", "data.views=3"]) == 0
    text = capsys.readouterr().out
    assert "data.views = 3  # Input views per scene" in text


def test_python_m_pipelines_runs():
    r = subprocess.run([sys.executable, "-m", "pipelines", "evaluate", "--list-methods"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "nearest-view" in r.stdout


def _one_clear_line(capsys, argv, pattern):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    messages = [line for line in err.splitlines() if line.startswith("sparsefusion ")]  # not progress bars
    assert len(messages) == 1 and err.endswith(messages[0]), err
    assert "Traceback" not in err and pattern in messages[0], err


def test_clear_errors(sphere_root, tmp_path, capsys):
    out = tmp_path / "o"
    _one_clear_line(capsys, _eval_args(tmp_path / "missing", out), "dataset root does not exist")
    (sphere_root / "empty_cat").mkdir()
    _one_clear_line(capsys, _eval_args(sphere_root, out)[:-2] + ["--category", "empty_cat", "--out", str(out)],
                    "has no annotation file")
    _one_clear_line(capsys, _eval_args(sphere_root, out, "data.rooot=x"), "unknown config key 'data.rooot'")
    _one_clear_line(capsys, _eval_args(sphere_root, out, "data.views=two"), "data.views")
    _one_clear_line(capsys, ["evaluate", "--method", "nope"], "unknown method 'nope'")
    _one_clear_line(capsys, _eval_args(sphere_root, out, "data.views=10"), "cannot give 10 input view")


def test_corrupt_jpeg_is_named(sphere_root, tmp_path, capsys):
    (sphere_root / "toys/seq_0/images/frame000003.jpg").write_bytes(b"\xff\xd8\xff garbage")
    _one_clear_line(capsys, _eval_args(sphere_root, tmp_path / "o"), "frame000003.jpg")


def test_annotation_path_leaving_the_root_is_refused(sphere_root, tmp_path, capsys):
    ann_path = sphere_root / "toys/frame_annotations.jgz"
    anns = json.loads(gzip.decompress(ann_path.read_bytes()))
    anns[0]["image"]["path"] = "../../../etc/passwd"
    ann_path.write_bytes(gzip.compress(json.dumps(anns).encode()))
    _one_clear_line(capsys, _eval_args(sphere_root, tmp_path / "o"), "leaves the dataset root")


@pytest.mark.parametrize("scale", [1.5, -1.0])  # a scaled matrix; a reflection (det -1)
def test_annotation_whose_R_is_not_a_rotation_is_refused(sphere_root, tmp_path, capsys, scale):
    ann_path = sphere_root / "toys/frame_annotations.jgz"
    anns = json.loads(gzip.decompress(ann_path.read_bytes()))
    bad = next(a for a in anns if a["sequence_name"] == "seq_1" and a["frame_number"] == 4)
    bad["viewpoint"]["R"] = [[scale * x for x in row] for row in bad["viewpoint"]["R"]]
    ann_path.write_bytes(gzip.compress(json.dumps(anns).encode()))
    msg = "sequence seq_1, frame 4: viewpoint R is not a rotation"
    _one_clear_line(capsys, _eval_args(sphere_root, tmp_path / "o"), msg)


def test_negative_image_size_is_refused(sphere_root, tmp_path, capsys):
    argv = _eval_args(sphere_root, tmp_path / "o")
    argv[argv.index("--image-size") + 1] = "-8"
    _one_clear_line(capsys, argv, "data.image_size must be a positive number of pixels")
    _one_clear_line(capsys, _eval_args(sphere_root, tmp_path / "o", "data.image_size=0"), "data.image_size")
    from scenes.co3d import CO3DOptions
    from scenes.errors import UserError

    with pytest.raises(UserError, match="image size must be a positive"):
        CO3DOptions(image_size=-8)


def _camera_file(path, R):
    K = [[50.0, 0, 32], [0, 50.0, 32], [0, 0, 1]]
    path.write_text(json.dumps({"frames": [
        {"image": "a.png", "height": 64, "width": 64, "K": K, "R": R, "t": [0, 0, 3]}]}))
    return path


def test_camera_file_validation(tmp_path, capsys):
    good = _camera_file(tmp_path / "good.json", [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert main(["cameras", "--cameras", str(good), "--plot", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 1000
    bad = _camera_file(tmp_path / "bad.json", [[1, 0, 0], [0, 1, 0], [0, 0, -1]])
    _one_clear_line(capsys, ["cameras", "--cameras", str(bad)], "is not a rotation")


def test_cameras_export_matches_written_cameras(sphere_root, tmp_path):
    out = tmp_path / "cams.json"
    assert main(["cameras", "--data", str(sphere_root), "--category", "toys", "--out", str(out),
                 "--plot", str(tmp_path / "cams.png")]) == 0
    frames = json.loads(out.read_text())["frames"]
    assert len(frames) == 20 and frames[0]["height"] == 48 and frames[0]["width"] == 64
    assert frames[0]["image"] == "toys/seq_0/images/frame000000.jpg"
    from scenes.custom import read_camera_file

    cams = read_camera_file(out).cameras  # the export is itself a valid camera file
    assert len(cams) == 20


def test_help_names_values_and_version(capsys):
    from pipelines import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    assert exit_.value.code == 0 and "FLAG:" not in text
    assert "--data ROOT" in text and "--max-scenes N" in text and "--config PRESET" in text
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"sparsefusion {__version__}"


@pytest.mark.parametrize("words", [["a,b,c"], ["a", "b", "c"], ["a,b", "c"], ["a,", "b,c"]])
def test_compare_methods_take_commas_or_spaces(words, capsys):
    assert main(["compare", "--methods", *words, "--show-config"]) == 0
    assert "methods = ['a', 'b', 'c']" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--help"], ["evaluate", "--help"], ["train-vldm", "--help"]])
def test_help_imports_no_command_module_and_every_reference_resolves(argv):
    """--help imports none of the commands' modules (nor torch); every "module:name" in the table exists."""
    code = (
        "import sys\nfrom pipelines.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('pipelines.harness', 'pipelines.training',"
        " 'pipelines.reconstruction', 'pipelines.tools'))]\n"
        "print('IMPORTED', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "IMPORTED []" in out
    from pipelines.cli.commands import COMMANDS, resolve

    for cmd in COMMANDS:
        for ref in (cmd.config, cmd.run, cmd.default_preset, cmd.plan):
            assert ref is None or callable(resolve(ref)), ref

"""``sparsefusion reconstruct`` end to end on tiny data: outputs, mesh, resume after a kill, bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_vldm import tiny_model_and_sphere

import pipelines.reconstruction.fit as fit_module
from pipelines.cli import main

TINY = ["--config", "demo",
        "field.n_levels=2", "field.log2_table_size=8", "field.base_resolution=4", "field.finest_resolution=16",
        "field.hidden=16", "distill.iters=6", "distill.bootstrap_iters=2", "distill.sampler.n_coarse=8",
        "distill.sampler.n_fine=4", "photometric.iters=6", "photometric.rays=64", "photometric.sampler.n_coarse=8",
        "photometric.sampler.n_fine=4", "teacher.steps=2", "circle_views=4", "checkpoint_every=2",
        "output.turntable_frames=4", "output.mesh_resolution=24"]


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    return tiny_model_and_sphere(tmp_path_factory, n_seq=1)


def _reconstruct(folder, root, out, *extra):
    return main(["reconstruct", "--checkpoint", str(folder), "--data", str(root), "--category", "toys",
                 "--views", "2", "--image-size", "16", "--out", str(out), *TINY, *extra])


def read_ply_counts(path):
    """(vertices, faces) from a PLY header, checking the binary body has exactly their size."""
    data = path.read_bytes()
    header, body = data.split(b"end_header\n", 1)
    lines = header.decode().splitlines()
    v = int(next(l for l in lines if l.startswith("element vertex")).split()[-1])
    f = int(next(l for l in lines if l.startswith("element face")).split()[-1])
    assert len(body) == v * (12 + 3) + f * (1 + 12)
    faces = np.frombuffer(body[v * 15:], dtype=[("n", "u1"), ("i", "<i4", (3,))])
    assert (faces["n"] == 3).all() and (faces["i"] < v).all() and (faces["i"] >= 0).all()
    return v, f


def test_sparsefusion_writes_every_output(model_and_data, tmp_path):
    folder, root = model_and_data
    assert _reconstruct(folder, root, tmp_path / "r") == 0
    scene = tmp_path / "r" / "seq_0"
    for name in ("field.safetensors", "config.yaml", "turntable.mp4", "turntable.gif", "metrics.json", "mesh.ply"):
        assert (scene / name).is_file(), name
    assert not (scene / "state.pt").exists()
    m = json.loads((scene / "metrics.json").read_text())
    assert m["iterations"] == 6 and m["unet_evaluations"] == 4 * 2  # 4 denoised targets, 2 steps each
    assert len(m["targets"]) == 4 and 0 < m["psnr"] < 60
    assert sorted(p.name for p in (scene / "views").iterdir()) == [f"{f:06d}.png" for f in m["targets"]]
    depth = np.asarray(Image.open(scene / "depth" / f"{m['targets'][0]:06d}.png"))
    assert depth.dtype == np.uint16 and depth.shape == (16, 16)
    with Image.open(scene / "turntable.gif") as gif:
        assert gif.n_frames == 4
    v, f = read_ply_counts(scene / "mesh.ply")
    assert v > 0 and f > 0 and m["mesh"] == {"vertices": v, "faces": f}


def test_kill_then_resume_finishes_the_same_iterations(model_and_data, tmp_path, monkeypatch):
    folder, root = model_and_data
    save = fit_module._save_state

    def killed_after_4(path, fld, opt, iteration, *args):
        save(path, fld, opt, iteration, *args)
        if iteration == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(fit_module, "_save_state", killed_after_4)
    assert _reconstruct(folder, root, tmp_path / "r") == 130
    assert (tmp_path / "r" / "seq_0" / "state.pt").is_file()
    assert not (tmp_path / "r" / "seq_0" / "metrics.json").exists()
    monkeypatch.setattr(fit_module, "_save_state", save)
    assert _reconstruct(folder, root, tmp_path / "r", "--resume") == 0
    m = json.loads((tmp_path / "r" / "seq_0" / "metrics.json").read_text())
    assert m["iterations"] == 6 and m["resumed_from"] == 4
    assert m["unet_evaluations"] == 4 * 2  # evaluations before the kill are carried over
    assert _reconstruct(folder, root, tmp_path / "r", "--resume") == 0  # finished: kept, not redone


@pytest.mark.parametrize("mode", ["sparsefusion", "photometric"])
def test_a_run_killed_between_checkpoints_resumes_to_the_uninterrupted_field(model_and_data, tmp_path, monkeypatch, mode):
    from safetensors.torch import load_file

    folder, root = model_and_data
    extra = ["--mode", mode, "distill.reuse_target=3", "output.mesh=false",  # iteration 4 reuses the cached target
             # the occupancy grid is updated at 0, 2 and 4, each update decaying the checkpointed one, and carved
             f"{'distill' if mode == 'sparsefusion' else 'photometric'}.sampler.update_every=2",
             f"{'distill' if mode == 'sparsefusion' else 'photometric'}.sampler.carve_inputs=true"]
    assert _reconstruct(folder, root, tmp_path / "whole", *extra) == 0
    real = fit_module.distill if mode == "sparsefusion" else fit_module.fit_photometric

    def killed_after_5(*args, on_iteration, **kw):  # checkpoints at 2 and 4: the kill loses iteration 5's work
        def hook(*a):
            on_iteration(*a)
            if (a[0].iteration if mode == "sparsefusion" else a[0]) == 5:
                raise KeyboardInterrupt
        return real(*args, on_iteration=hook, **kw)

    monkeypatch.setattr(fit_module, "distill" if mode == "sparsefusion" else "fit_photometric", killed_after_5)
    assert _reconstruct(folder, root, tmp_path / "cut", *extra) == 130
    monkeypatch.undo()
    assert _reconstruct(folder, root, tmp_path / "cut", *extra, "--resume") == 0
    whole, cut = (json.loads((tmp_path / r / "seq_0" / "metrics.json").read_text()) for r in ("whole", "cut"))
    assert cut["resumed_from"] == 4 and cut["iterations"] == whole["iterations"] == 6
    assert cut["unet_evaluations"] == whole["unet_evaluations"]
    for key in ("psnr", "ssim", "psnr_fg"):
        assert cut[key] == pytest.approx(whole[key], abs=1e-5), key
    a, b = (load_file(tmp_path / r / "seq_0" / "field.safetensors") for r in ("whole", "cut"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5), k


def test_photometric_and_sds_modes(model_and_data, tmp_path):
    folder, root = model_and_data
    assert _reconstruct(folder, root, tmp_path / "p", "--mode", "photometric", "output.mesh=false") == 0
    m = json.loads((tmp_path / "p" / "seq_0" / "metrics.json").read_text())
    assert m["iterations"] == 6 and m["unet_evaluations"] == 0 and not (tmp_path / "p" / "seq_0" / "mesh.ply").exists()
    assert _reconstruct(folder, root, tmp_path / "s", "--mode", "sds") == 0
    m = json.loads((tmp_path / "s" / "seq_0" / "metrics.json").read_text())
    assert m["mode"] == "sds" and m["unet_evaluations"] == 4  # one UNet call per fusion step after bootstrap


def _custom(tmp_path, n_images=2, alpha=True, R=None):
    import torch

    from scenes.cameras import intrinsics_from_fov, look_at

    eye = torch.tensor([[3.0, 0, 0], [0, 3.0, 0]], dtype=torch.float64)
    cams = look_at(eye, torch.zeros(3, dtype=torch.float64), torch.tensor([0, 0, 1.0], dtype=torch.float64),
                   intrinsics_from_fov(45.0, 16, 16, torch.float64), 16, 16)
    frames, images = [], []
    for i in range(2):
        img = np.zeros((16, 16, 4 if alpha else 3), np.uint8)
        img[4:12, 4:12] = 200
        p = tmp_path / f"im{i}.png"
        Image.fromarray(img).save(p)
        images.append(str(p))
        frames.append({"image": p.name, "height": 16, "width": 16, "K": cams.K[i].tolist(),
                       "R": (R if R is not None and i == 1 else cams.R[i].tolist()), "t": cams.t[i].tolist()})
    (tmp_path / "cams.json").write_text(json.dumps({"convention": "opencv", "frames": frames}))
    return ["--images", *images[:n_images], "--cameras", str(tmp_path / "cams.json")]


def test_custom_input_runs(model_and_data, tmp_path):
    folder, _ = model_and_data
    args = _custom(tmp_path)
    assert main(["reconstruct", "--checkpoint", str(folder), "--image-size", "16", "--out", str(tmp_path / "o"),
                 *args, *TINY, "output.mesh=false"]) == 0
    m = json.loads((tmp_path / "o" / "custom" / "metrics.json").read_text())
    assert "psnr" not in m and len(list((tmp_path / "o" / "custom" / "views").glob("turntable_*.png"))) == 4
    assert m["inputs"] == [0, 1]


def test_custom_input_from_the_camera_file_alone_with_picked_frames(model_and_data, tmp_path):
    folder, _ = model_and_data
    args = _custom(tmp_path)
    cameras = args[args.index("--cameras") + 1]
    assert main(["reconstruct", "--checkpoint", str(folder), "--image-size", "16", "--out", str(tmp_path / "o"),
                 "--cameras", cameras, "--frames", "1,0", *TINY, "output.mesh=false"]) == 0
    m = json.loads((tmp_path / "o" / "custom" / "metrics.json").read_text())
    assert m["inputs"] == [1, 0]  # the file's frames, in the order picked


@pytest.mark.parametrize("case,message", [
    ("rotation", "is not a rotation"),
    ("unknown", "matches no frame of"),
    ("alpha", "has no alpha channel and no mask"),
])
def test_bad_custom_input_is_one_line_exit_2(model_and_data, tmp_path, capsys, case, message):
    folder, _ = model_and_data
    args = _custom(tmp_path, alpha=case != "alpha", R=[[1, 0, 0], [0, 1, 0], [0, 0, 2]] if case == "rotation" else None)
    if case == "unknown":
        args[1] = str(tmp_path / "elsewhere.png")  # an image the camera file does not name
    assert main(["reconstruct", "--checkpoint", str(folder), "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_sparsefusion_method_in_the_harness(model_and_data):
    import torch

    from pipelines.harness.methods import MethodContext, SceneMethod, build_method
    from scenes.co3d import CO3DDataset, CO3DOptions

    folder, root = model_and_data
    method = build_method("sparsefusion-fast", MethodContext(torch.device("cpu"), str(folder)))
    method.cfg.distill.iters, method.cfg.distill.bootstrap_iters = 4, 1
    method.cfg.field.n_levels, method.cfg.field.finest_resolution, method.cfg.circle_views = 2, 16, 4
    ds = CO3DDataset(root, "toys")
    views = ds.load(ds.sequences("fewview_dev", "test")[0], CO3DOptions(image_size=16))
    with torch.no_grad():  # as the harness calls it
        out = method.predict(views.select([0, 3]), views.select([1, 2]).cameras)
    pred, opacity = out.images, out.opacity
    assert pred.shape == (2, 3, 16, 16) and 0 <= pred.min() and pred.max() <= 1
    assert out.stats == {"unet_evaluations": 1 * 2, "iterations": 4}  # 3 fusion steps, reuse 3: 1 target
    assert opacity.shape == (2, 1, 16, 16) and 0 <= opacity.min() <= opacity.max() <= 1
    assert isinstance(method, SceneMethod) and method.render_scene(views.select([1]).cameras).shape == (1, 3, 16, 16)


def test_the_committed_mesh_opens_and_has_the_recorded_size():
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs" / "images"
    recorded = json.loads((docs / "sparsefusion_obj_800.json").read_text())["mesh"]
    v, f = read_ply_counts(docs / "sparsefusion_mesh_obj_800.ply")
    assert (v, f) == (recorded["vertices"], recorded["faces"]) and v > 1000


def test_two_processes_share_the_scenes_and_match_one(tmp_path_factory, tmp_path):
    import os
    import subprocess
    import sys

    from test_train_vldm import _free_port

    folder, root = tiny_model_and_sphere(tmp_path_factory, n_seq=3)
    extra = ["--mode", "photometric", "output.mesh=false"]
    assert _reconstruct(folder, root, tmp_path / "one", *extra) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "pipelines", "reconstruct", "--checkpoint", str(folder), "--data", str(root), "--category", "toys",
           "--views", "2", "--image-size", "16", "--out", str(tmp_path / "two"), *TINY, *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = (json.loads((tmp_path / run / "summary.json").read_text()) for run in ("one", "two"))
    assert two["processes"] == 2 and two["scenes"] == one["scenes"] == 3
    for a, b in zip(one["per_scene"], two["per_scene"]):
        assert a["scene"] == b["scene"] and b["psnr"] == pytest.approx(a["psnr"], abs=1e-3)

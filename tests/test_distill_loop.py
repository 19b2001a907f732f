"""The distillation loop on a tiny scene: phases, target reuse, teacher cost, resumable state."""

import pytest
import torch

from conftest import write_sphere_dataset
from distill.encoding import HashGridConfig
from distill.field import InstanceField
from distill.loop import DistillConfig, distill
from distill.sampler import SamplerConfig
from scenes.co3d import CO3DDataset, CO3DOptions
from scenes.normalize import circle_path
from test_vldm import tiny_pipeline
from vldm.teacher import VLDMTeacher

GRID = HashGridConfig(n_levels=4, features_per_level=2, log2_table_size=10, base_resolution=4, finest_resolution=32)
CFG = dict(sampler=SamplerConfig("dense", n_coarse=8, n_fine=4), bootstrap_iters=2, lr_grid=1e-2, lr_mlp=1e-3)


def _setup(tmp_path):
    write_sphere_dataset(tmp_path, n_seq=1, n_frames=8)
    ds = CO3DDataset(tmp_path, "toys")
    views = ds.load(ds.sequences("fewview_dev", "test")[0], CO3DOptions(image_size=16))
    inputs = views.select([0, 3])
    cameras = circle_path(views.cameras, n=6)
    teacher = VLDMTeacher(tiny_pipeline(), inputs.images, inputs.cameras, steps=2)
    teacher.prepare(cameras)
    torch.manual_seed(0)
    return inputs, cameras, teacher, InstanceField(grid=GRID, hidden=16, backend="torch")


def test_phases_reuse_and_teacher_cost(tmp_path):
    inputs, cameras, teacher, field = _setup(tmp_path)
    before = field.encoding.tables.detach().clone()
    seen = []
    cfg = DistillConfig(iters=6, reuse_target=2, **CFG)
    state = distill(field, inputs, cameras, teacher, cfg, progress=False,
                    on_iteration=lambda s, logs: seen.append(logs))
    assert state.iteration == 6 and len(seen) == 6
    # 2 bootstrap iterations cost nothing; 4 diffusion iterations with reuse 2 denoise twice, 2 steps each
    assert [s["unet_evaluations"] for s in seen] == [0, 0, 2, 2, 4, 4]
    assert all(torch.isfinite(torch.tensor([s["input"], s["fusion"]])).all() for s in seen)
    assert not torch.equal(before, field.encoding.tables)


def test_runs_resume_from_their_state(tmp_path):
    inputs, cameras, teacher, field = _setup(tmp_path)
    cfg = DistillConfig(iters=3, **CFG)
    state = distill(field, inputs, cameras, teacher, cfg, progress=False)
    state = distill(field, inputs, cameras, teacher, DistillConfig(iters=5, **CFG), state=state, progress=False)
    assert state.iteration == 5 and teacher.unet_evaluations == 2 * 3  # iterations 2, 3, 4 denoise


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 autocast applies on CUDA only")
def test_bf16_autocast_runs_on_cuda(tmp_path):
    inputs, cameras, teacher, field = _setup(tmp_path)
    teacher.pipe.to("cuda")
    teacher.context_images = teacher.context_images.cuda()
    teacher.context_cameras = teacher.context_cameras.to("cuda")
    teacher.prepare(cameras.to("cuda"))
    seen = []
    cfg = DistillConfig(iters=4, bf16=True, **CFG)
    distill(field.cuda(), inputs.to("cuda"), cameras.to("cuda"), teacher, cfg, progress=False,
            on_iteration=lambda s, logs: seen.append(logs))
    assert len(seen) == 4 and all(torch.isfinite(torch.tensor([s["input"], s["fusion"]])).all() for s in seen)


def test_fusion_step_adds_the_official_opacity_term(tmp_path):
    """The official adds 1e-3 · mean √(opacity² + 0.01) to the fusion loss too (bootstrap and denoised phases)."""
    from distill.loop import DistillState, fusion_loss
    from distill.sampler import make_sampler

    inputs, cameras, teacher, field = _setup(tmp_path)
    sampler = make_sampler(CFG["sampler"])

    def loss(weight, iteration):
        torch.manual_seed(1)
        cfg = DistillConfig(iters=4, fusion_opacity_weight=weight, **CFG)
        return fusion_loss(field, teacher, cameras, sampler, DistillState(iteration=iteration), cfg, None,
                           torch.Generator().manual_seed(2))

    for iteration in (0, 3):  # bootstrap, then a denoised target
        extra = (loss(1e-3, iteration) - loss(0.0, iteration)).item()
        assert 1e-3 * 0.1 - 1e-7 <= extra <= 1e-3 * 1.01**0.5 + 1e-7  # 1e-3 · mean √(op² + 0.01), op ∈ [0, 1]

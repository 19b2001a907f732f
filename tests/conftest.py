"""Shared fixtures: test data paths and small generated datasets."""

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> Path:
    """Folder of reference vectors shipped with the tests."""
    return DATA


def write_sphere_dataset(root, category="toys", n_seq=3, n_frames=12, height=48, width=64,
                         intrinsics_format="ndc_isotropic", center=(1.0, -2.0, 0.5), distance=5.0):
    """A CO3D-layout dataset of a sphere (radius 1, at ``center``) seen from a ring of cameras.

    Returns the OpenCV cameras written, per sequence (float64). Images are JPEG, masks PNG.
    """
    import math
    from pathlib import Path

    import numpy as np
    import torch

    from scenes.cameras import intrinsics_from_fov, look_at
    from scenes.co3d_write import FrameRecord, SequenceRecord, write_category
    from scenes.io import write_image

    root = Path(root)
    c = torch.tensor(center, dtype=torch.float64)
    K = intrinsics_from_fov(45.0, height, width, torch.float64)
    K[0, 2] += 3.0  # off-centre principal point
    seqs, cams_out = [], {}
    for s in range(n_seq):
        a = torch.arange(n_frames, dtype=torch.float64) * 2 * math.pi / n_frames + 0.1 * s
        eye = c + distance * torch.stack([a.cos() * 0.9, a.sin() * 0.9, torch.full_like(a, 0.436)], -1)
        cams = look_at(eye, c, torch.tensor([0.0, 0, 1], dtype=torch.float64), K, height, width)
        o, d = cams.rays()
        oc = o - c
        b = (oc * d).sum(-1)
        disc = b**2 - ((oc * oc).sum(-1) - 1.0)
        mask = (disc > 0).double()
        name = f"seq_{s}"
        frames = []
        for i in range(n_frames):
            shade = (0.3 + 0.7 * torch.stack([(d[i, ..., 0] + 1) / 2, (d[i, ..., 1] + 1) / 2, torch.full_like(d[i, ..., 0], 0.8)], -1))
            img = (shade * mask[i][..., None]).numpy()
            ip = f"{category}/{name}/images/frame{i:06d}.jpg"
            mp = f"{category}/{name}/masks/frame{i:06d}.png"
            write_image(root / ip, img.astype(np.float32))
            write_image(root / mp, mask[i].numpy().astype(np.float32))
            frames.append(FrameRecord(i, ip, mp, float(mask[i].sum())))
        seqs.append(SequenceRecord(name, frames, cams))
        cams_out[name] = cams
    names = [s.name for s in seqs]
    write_category(root, category, seqs,
                   {"fewview_dev": {"train": names[:1], "test": names}}, intrinsics_format)
    return cams_out


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny test models gain nothing from threads and lose a lot when another process shares the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

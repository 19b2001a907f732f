"""The CO3D v2 reader: exact cameras, crop/resize, normalisation, splits, bad data."""

import gzip
import json

import pytest
import torch

from conftest import write_sphere_dataset
from scenes.cameras import Cameras, intrinsics_from_fov
from scenes.co3d import CO3DDataset, CO3DOptions, crop_box, mask_bbox, prepare_frame
from scenes.errors import UserError
from scenes.splits import eval_frame_indices, eval_scenes, eval_sequences

RAW = CO3DOptions(crop=False, image_size=None, normalize=False, masked=False)


@pytest.mark.parametrize("fmt", ["ndc_isotropic", "ndc_norm_image_bounds"])
def test_non_square_cameras_round_trip_exactly(tmp_path, fmt):
    written = write_sphere_dataset(tmp_path, height=48, width=64, intrinsics_format=fmt, n_seq=1, n_frames=5)
    ds = CO3DDataset(tmp_path, "toys")
    seq = ds.sequences("fewview_dev", "test")[0]
    views = ds.load(seq, RAW, dtype=torch.float64)
    orig = written["seq_0"]
    assert (views.cameras.height, views.cameras.width) == (48, 64)
    assert views.images.shape == (5, 3, 48, 64)
    torch.testing.assert_close(views.cameras.K, orig.K, atol=1e-4, rtol=0)
    torch.testing.assert_close(views.cameras.R, orig.R, atol=1e-6, rtol=0)
    torch.testing.assert_close(views.cameras.t, orig.t, atol=1e-6, rtol=0)
    ann = json.loads(gzip.decompress((tmp_path / "toys/frame_annotations.jgz").read_bytes()))
    assert {a["viewpoint"]["intrinsics_format"] for a in ann} == {fmt}


def test_crop_and_resize_keep_projection_consistent(tmp_path):
    written = write_sphere_dataset(tmp_path, n_seq=1, n_frames=4)
    ds = CO3DDataset(tmp_path, "toys")
    seq = ds.sequences("fewview_dev", "test")[0]
    opts = CO3DOptions(crop=True, image_size=32, normalize=False, masked=True)
    views = ds.load(seq, opts, dtype=torch.float64)
    assert views.images.shape == (4, 3, 32, 32) and views.valid.shape == (4, 1, 32, 32)
    # the sphere centre projects to the same relative place in the crop as in the original
    c = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    uv_orig, _ = written["seq_0"].project(c)
    uv_new, _ = views.cameras.project(c)
    raw = ds.load(seq, RAW)
    for i in range(4):
        x0, y0, x1, y1 = crop_box(mask_bbox(raw.masks[i, 0].numpy()), 48, 64)
        s = min(32 / (x1 - x0), 32 / (y1 - y0))
        expected = (uv_orig[i, 0] - torch.tensor([x0, y0], dtype=torch.float64)) * s
        torch.testing.assert_close(uv_new[i, 0], expected)
        # valid region: the pasted image covers the top-left part only
        assert views.valid[i, 0, 0, 0] == 1
    # masked images are black outside the mask
    assert (views.images * (1 - views.masks)).abs().max() < 1e-6
    # the mask projects where the sphere is: the centre pixel of the sphere is foreground
    u, v = uv_new[0, 0].round().long().tolist()
    assert views.masks[0, 0, v, u] == 1


def _white_frame_with_square():
    """A 100² white frame with a (0.2, 0.6, 0.4) square whose edges fall inside 32² output pixels."""
    img, mask = torch.ones(3, 100, 100), torch.zeros(1, 100, 100)
    img[:, 31:70, 31:70] = torch.tensor([0.2, 0.6, 0.4])[:, None, None]
    mask[:, 31:70, 31:70] = 1.0
    cam = Cameras(torch.eye(3)[None], torch.tensor([[0.0, 0.0, 3.0]]), intrinsics_from_fov(40, 100, 100)[None], 100, 100)
    return img, mask, cam


def test_soft_masks_keep_coverage_and_no_background_colour():
    img, mask, cam = _white_frame_with_square()
    colour = torch.tensor([0.2, 0.6, 0.4])[:, None, None]
    hard, hard_mask, _, cam_hard = prepare_frame(img, mask, cam, CO3DOptions(crop=True, image_size=32, normalize=False))
    soft, soft_mask, _, cam_soft = prepare_frame(img, mask, cam, CO3DOptions(crop=True, image_size=32,
                                                                            normalize=False, soft_masks=True))
    # implicitron's order: binary mask, and edge pixels brighter than the object (white background bleeds in)
    assert set(hard_mask.unique().tolist()) <= {0.0, 1.0}
    assert (hard - colour * hard_mask).amax() > 0.1
    # soft masks: partial coverage at the edges, and every pixel is the object's colour times its coverage
    edge = (soft_mask > 0.05) & (soft_mask < 0.95)
    assert edge.sum() > 10
    torch.testing.assert_close(soft, colour * soft_mask, atol=2e-3, rtol=0)
    # same crop and camera either way; the soft mask sums to the square's area in output pixels
    torch.testing.assert_close(cam_soft.K, cam_hard.K)
    s = 32 / _crop_side(mask)  # output pixels per input pixel
    torch.testing.assert_close(soft_mask.sum(), torch.tensor(39.0**2 * s**2), rtol=2e-2, atol=0)
    # native size and no crop: both orders are the plain product
    raw = CO3DOptions(crop=False, image_size=None, normalize=False)
    torch.testing.assert_close(prepare_frame(img, mask, cam, raw)[0],
                               prepare_frame(img, mask, cam, CO3DOptions(crop=False, image_size=None, normalize=False,
                                                                         soft_masks=True))[0])


def _crop_side(mask):
    """The longer side of a frame's crop box."""
    x0, y0, x1, y1 = crop_box(mask_bbox(mask[0].numpy()), *mask.shape[1:])
    return max(x1 - x0, y1 - y0)


def test_mask_bbox_and_context():
    m = torch.zeros(20, 30).numpy()
    m[5:10, 8:20] = 1.0
    assert mask_bbox(m) == (8, 5, 12, 5)
    x0, y0, x1, y1 = crop_box((8, 5, 12, 5), 20, 30, context=0.3)
    assert (x0, x1) == (round(8 - 1.8), round(20 + 1.8)) and (y0, y1) == (round(5 - 0.75), round(10 + 0.75))
    assert crop_box((0, 0, 30, 20), 20, 30) == (0, 0, 30, 20)  # clamped to the image


def test_normalisation_puts_cameras_at_distance_three(tmp_path):
    write_sphere_dataset(tmp_path, n_seq=1, distance=5.0)
    ds = CO3DDataset(tmp_path, "toys")
    views = ds.load(ds.sequences("fewview_dev", "test")[0], CO3DOptions(image_size=32), dtype=torch.float64)
    torch.testing.assert_close(views.cameras.centers.norm(dim=-1), torch.full((12,), 3.0, dtype=torch.float64))
    torch.testing.assert_close(views.transform.center, torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))


def test_eval_split_matches_sparsefusion_protocol():
    inputs, targets = eval_frame_indices(100, scene_index=3, views=2)
    spaced = torch.linspace(0, 99, 32).long().tolist()
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(3)).tolist()
    assert inputs == [spaced[perm[0]], spaced[perm[1]]]
    assert sorted(inputs + targets) == spaced
    assert not set(inputs) & set(targets)
    with pytest.raises(UserError):
        eval_frame_indices(3, 0, views=3)


def test_eval_scenes_never_overlap(tmp_path):
    write_sphere_dataset(tmp_path, n_seq=3, n_frames=12)
    ds = CO3DDataset(tmp_path, "toys")
    scenes = list(eval_scenes(ds, eval_sequences(ds, "fewview_dev", "test"), 3, CO3DOptions(image_size=16)))
    assert [s.index for s in scenes] == [0, 1, 2]
    for s in scenes:
        assert len(s.inputs) == 3 and len(s.targets) == 9
        assert not set(s.inputs.frame_numbers) & set(s.targets.frame_numbers)


def test_partial_download_is_tolerated(tmp_path):
    write_sphere_dataset(tmp_path, n_seq=3)
    for f in (tmp_path / "toys/seq_1/images").iterdir():
        f.unlink()
    ds = CO3DDataset(tmp_path, "toys")
    with pytest.warns(UserWarning, match="1 sequence"):
        seqs = ds.sequences("fewview_dev", "test")
    assert [s.name for s in seqs] == ["seq_0", "seq_2"]


def test_bad_data_gives_clear_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        CO3DDataset(tmp_path / "nope", "toys")
    write_sphere_dataset(tmp_path, n_seq=1, n_frames=4)
    with pytest.raises(UserError, match="not found"):
        CO3DDataset(tmp_path, "cars")
    ds = CO3DDataset(tmp_path, "toys")
    with pytest.raises(UserError, match="set list not found"):
        ds.sequences("manyview_dev_0", "test")
    with pytest.raises(UserError, match="leaves the dataset root"):
        ds.resolve("../../etc/passwd")
    (tmp_path / "toys/seq_0/images/frame000002.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(UserError, match="frame000002.jpg"):
        ds.load(ds.sequences("fewview_dev", "test")[0], RAW)

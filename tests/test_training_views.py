"""The training-view sampler: the query is never a context, draws are reproducible, caching changes nothing."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.data import DataLoader

from conftest import write_sphere_dataset
from scenes.co3d import CO3DDataset, CO3DOptions
from scenes.errors import UserError
from scenes.training import FrameStore, TrainFrames, TrainViews, cameras_of, collate_single, training_sequences

OPT = CO3DOptions(image_size=32)
N_FRAMES = 12


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("spheres")
    write_sphere_dataset(root, n_seq=3, n_frames=N_FRAMES)
    return root


def _views(root, **kw):
    kw = {"subset": "fewview_dev", "split": "test", "options": OPT, "min_frames": 5,
          "frames_per_sample": 8, "contexts": (2, 5), "progress": False, **kw}
    return TrainViews(CO3DDataset(root, "toys"), **kw)


def test_query_is_never_a_context_and_v_in_range(root):
    ds = _views(root)
    seen_v = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            ex = ds[i]
            ctx, q = ex["context_frames"].tolist(), ex["query_frame"].tolist()
            assert len(q) == 1 and q[0] not in ctx and len(set(ctx)) == len(ctx)
            v = len(ctx)
            assert 2 <= v <= 5
            seen_v.add(v)
            assert ex["context_images"].shape == (v, 3, 32, 32) and ex["query_image"].shape == (1, 3, 32, 32)
            assert ex["query_mask"].shape == ex["query_valid"].shape == (1, 1, 32, 32)
            assert ex["context_masks"].shape == (v, 1, 32, 32) and ex["context_valid"].shape == (v, 1, 32, 32)
            assert ex["context_R"].shape == (v, 3, 3) and ex["context_t"].shape == (v, 3)
            assert ex["context_K"].shape == (v, 3, 3) and ex["query_R"].shape == (1, 3, 3)
            assert ex["height"] == ex["width"] == 32 and ex["sequence"].startswith("seq_")
            assert ex["context_images"].dtype == torch.float32 and 0 <= ex["context_images"].min() \
                and ex["context_images"].max() <= 1
    assert seen_v == {2, 3, 4, 5}


def test_many_draws_never_repeat_the_query(root):
    ds = _views(root, contexts=(5, 7), frames_per_sample=N_FRAMES, samples_per_epoch=300)
    assert len(ds) == 300
    for i in range(300):
        ex = ds[i]
        assert ex["query_frame"].item() not in ex["context_frames"].tolist()


def test_query_in_contexts_as_often_as_independent_draws(root):
    """SparseFusion draws query and contexts independently: the query is a context w.p. V / pool."""
    ds = _views(root, query_in_contexts=True, samples_per_epoch=400)
    hits, expected = 0, 0.0
    for i in range(len(ds)):
        ex = ds[i]
        ctx, q = ex["context_frames"].tolist(), ex["query_frame"].item()
        expected += len(ctx) / 8  # frames_per_sample = 8 frames in the pool
        if q in ctx:
            hits += 1
            j = ctx.index(q)
            assert torch.equal(ex["query_image"][0], ex["context_images"][j])
            assert torch.equal(ex["query_R"][0], ex["context_R"][j]) and torch.equal(ex["query_t"][0], ex["context_t"][j])
    expected /= len(ds)  # ≈ 3.5 / 8
    assert abs(hits / len(ds) - expected) < 0.08, (hits, expected)
    # off (the default) it never happens, and the option leaves the contexts themselves unchanged
    plain = _views(root, samples_per_epoch=400)
    assert all(torch.equal(plain[i]["context_frames"], ds[i]["context_frames"]) for i in range(50))


def test_query_image_and_camera_belong_to_the_same_frame(root):
    dataset = CO3DDataset(root, "toys")
    ds = _views(root)
    ex = ds[1]
    seq = next(s for s in dataset.sequences("fewview_dev", "test") if s.name == ex["sequence"])
    j = [f["frame_number"] for f in seq.frames].index(ex["query_frame"].item())
    ref = dataset.load(seq, OPT, [j])
    assert torch.allclose(ex["query_image"], ref.images, atol=0.5 / 255 + 1e-6)  # uint8 cache
    cams = cameras_of(ex, "query")
    assert isinstance(cams.R, torch.Tensor) and len(cams) == 1 and cams.height == 32
    assert torch.allclose(cams.R, ref.cameras.R) and torch.allclose(cams.t, ref.cameras.t)
    assert torch.allclose(cams.K, ref.cameras.K)
    assert len(cameras_of(ex, "context")) == ex["context_images"].shape[0]


def test_draws_are_reproducible_and_depend_on_seed_index_epoch(root):
    a, b = _views(root, seed=3), _views(root, seed=3)
    for i in range(len(a)):
        ea, eb = a[i], b[i]
        assert all(torch.equal(ea[k], eb[k]) for k in ea if torch.is_tensor(ea[k]))
    other_seed = _views(root, seed=4)
    keys = lambda ds: [(ds[i]["context_frames"].tolist(), ds[i]["query_frame"].item()) for i in range(len(ds))]  # noqa: E731
    assert keys(a) != keys(other_seed)
    first = keys(a)
    a.set_epoch(1)
    assert keys(a) != first
    a.set_epoch(0)
    assert keys(a) == first
    assert torch.equal(a.example(2, epoch=1)["context_images"], b.example(2, epoch=1)["context_images"])
    b.set_epoch(1)
    assert torch.equal(a.example(2, epoch=1)["context_images"], b[2]["context_images"])


def test_cache_and_no_cache_give_identical_examples(root):
    cached, lazy = _views(root, cache=True), _views(root, cache=False)
    assert cached.store.nbytes() > 0 and lazy.store.nbytes() == 0
    for epoch in (0, 2):
        cached.set_epoch(epoch), lazy.set_epoch(epoch)
        for i in range(len(cached)):
            ec, el = cached[i], lazy[i]
            assert ec.keys() == el.keys()
            for k in ec:
                assert torch.equal(ec[k], el[k]) if torch.is_tensor(ec[k]) else ec[k] == el[k], k


def test_dataloader_workers_give_the_same_examples(root):
    ds = _views(root, samples_per_epoch=6)
    direct = [ds[i]["context_frames"].tolist() for i in range(6)]
    loader = DataLoader(ds, batch_size=1, collate_fn=collate_single, num_workers=2)
    assert [ex["context_frames"].tolist() for ex in loader] == direct


def _corrupt(root, seq="seq_1", frame=4):
    (root / f"toys/{seq}/images/frame{frame:06d}.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")


def test_corrupt_jpeg_is_skipped_and_counted(tmp_path):
    write_sphere_dataset(tmp_path, n_seq=2, n_frames=N_FRAMES)
    _corrupt(tmp_path)
    with pytest.warns(UserWarning, match="1 unreadable frame"):
        cached = _views(tmp_path, cache=True)
    assert cached.store.skipped == 1
    assert cached.store.frame_count(1) == N_FRAMES - 1
    lazy = _views(tmp_path, cache=False, samples_per_epoch=40)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for ds in (cached, lazy):
            for epoch in range(3):
                ds.set_epoch(epoch)
                for i in range(len(ds)):
                    ex = ds[i]
                    if ex["sequence"] == "seq_1":
                        assert 4 not in ex["context_frames"].tolist() + ex["query_frame"].tolist()
                    assert ex["query_frame"].item() not in ex["context_frames"].tolist()
    assert lazy.store.skipped == 1  # found once, then remembered
    assert any("skipped 1 unreadable frame" in str(w.message) for w in caught)


def test_train_frames_skip_unreadable_and_spread_evenly(tmp_path):
    write_sphere_dataset(tmp_path, n_seq=2, n_frames=N_FRAMES)
    _corrupt(tmp_path, "seq_0", 0)
    dataset = CO3DDataset(tmp_path, "toys")
    store = FrameStore(dataset, training_sequences(dataset, "fewview_dev", "test", 1), OPT, cache=False)
    frames = TrainFrames.evenly(store, 5)
    assert len(frames) == 5 and frames.frames[0] == (0, 0) and frames.frames[-1] == (1, N_FRAMES - 1)
    item = frames[0]  # unreadable: the next frame of the list instead
    assert item["image"].shape == (3, 32, 32) and item["mask"].shape == (1, 32, 32) and store.skipped == 1
    s, j = frames.frames[1]
    assert torch.equal(item["image"], store.load(s, [j]).images[0]) and item["image"].amax() > 0


def test_too_few_views_is_a_clear_error(root):
    with pytest.raises(UserError, match=r"dataset has at most 12 views per sequence, fewer than the 12 contexts \+ 1 query"):
        _views(root, contexts=(2, 12), frames_per_sample=20)
    with pytest.raises(UserError, match="has at least 20 frames .the longest has 12."):
        _views(root, min_frames=20)
    with pytest.raises(UserError, match="contexts"):
        _views(root, contexts=(3, 2))


def test_collate_single_refuses_batches():
    assert collate_single([{"a": 1}]) == {"a": 1}
    with pytest.raises(ValueError):
        collate_single([{}, {}])

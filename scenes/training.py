"""Training-time sampling of posed views: SparseFusion's recipe, reproducible across processes.

:class:`FrameStore` holds the frames of a set of sequences, either loaded once into memory as
uint8 (``cache=True``: CPU training never decodes a JPEG per step) or read on demand (CO3D
scale). Unreadable frames (corrupt or missing files) are skipped and counted, never fatal.

:class:`TrainViews` draws one training example per index: one sequence, up to
``frames_per_sample`` random frames of it, V ~ U{contexts} context views and one query view
that is never a context (or, with ``query_in_contexts``, is one as often as SparseFusion's
independent draws make it). :class:`TrainFrames` serves single frames (autoencoder training).
Every random choice comes from a generator seeded by (seed, index, epoch).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm

from .cameras import Cameras
from .co3d import CO3DDataset, CO3DOptions, Sequence, Views
from .errors import UnreadableImage, UserError


def example_seed(seed: int, index: int, epoch: int) -> int:
    """A 63-bit seed mixing (seed, index, epoch): the same on every process and machine."""
    state = np.random.SeedSequence([seed, index, epoch]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _to_uint8(x: Tensor) -> Tensor:
    return (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def _quantized(views: Views) -> Views:
    """Views with images, masks and valid regions stored as uint8 (4× less memory)."""
    return Views(_to_uint8(views.images), _to_uint8(views.masks), _to_uint8(views.valid),
                 views.cameras, views.frame_numbers, views.image_paths, views.sequence, views.transform)


def _as_float(views: Views) -> Views:
    """uint8 views back to float in [0, 1]."""
    f = lambda t: t.float().div_(255.0)  # noqa: E731
    return Views(f(views.images), f(views.masks), f(views.valid), views.cameras,
                 views.frame_numbers, views.image_paths, views.sequence, views.transform)


class FrameStore:
    """The frames of some sequences: cached in memory as uint8, or read from disk on demand.

    Both modes return the same values (on-demand frames go through the same uint8 rounding).
    Unreadable frames are left out and counted in :attr:`skipped`; a sequence with no readable
    frame is dropped.
    """

    def __init__(self, dataset: CO3DDataset, sequences: list[Sequence], options: CO3DOptions,
                 cache: bool = True, progress: bool = True):
        self.dataset, self.options, self.cache = dataset, options, cache
        self.skipped = 0
        self._bad: set[tuple[str, int]] = set()
        self._views: list[Views] = []
        if not cache:
            self.sequences = list(sequences)
            return
        kept = []
        for seq in tqdm(sequences, desc="caching training frames", unit="seq", disable=not progress):
            try:
                views = dataset.load(seq, options, skip_unreadable=True)
            except UnreadableImage:
                self.skipped += len(seq.frames)
                continue
            self.skipped += len(seq.frames) - len(views)
            kept.append(seq)
            self._views.append(_quantized(views))
        self.sequences = kept
        if self.skipped:
            warnings.warn(f"{self.skipped} unreadable frame(s) (corrupt or missing image/mask files) "
                          f"were skipped while caching {dataset.category}", stacklevel=2)

    def __len__(self) -> int:
        return len(self.sequences)

    def frame_count(self, s: int) -> int:
        """Frames of sequence ``s`` (readable ones when cached; annotated ones on demand)."""
        return len(self._views[s]) if self.cache else len(self.sequences[s].frames)

    def nbytes(self) -> int:
        """Memory held by the cache."""
        return sum(v.images.numel() + v.masks.numel() + v.valid.numel() for v in self._views)

    def load(self, s: int, index: list[int]) -> Views:
        """Frames ``index`` of sequence ``s`` as float views; unreadable ones are left out."""
        if self.cache:
            return _as_float(self._views[s].select(index))
        seq = self.sequences[s]
        index = [i for i in index if (seq.name, i) not in self._bad]
        try:
            views = self.dataset.load(seq, self.options, index, skip_unreadable=True) if index else None
        except UnreadableImage:
            views = None
        got = set(views.frame_numbers) if views is not None else set()
        lost = [i for i in index if seq.frames[i]["frame_number"] not in got]
        if lost:
            self._bad.update((seq.name, i) for i in lost)
            self.skipped += len(lost)
            warnings.warn(f"skipped {len(lost)} unreadable frame(s) of {seq.name} "
                          f"({self.skipped} skipped so far in this process)", stacklevel=2)
        if views is None:
            return None
        return _as_float(_quantized(views))

    def load_readable(self, s: int, candidates: list[int], n: int) -> Views | None:
        """The first ``n`` readable frames among ``candidates`` (in that order), or fewer."""
        views = self.load(s, candidates[:n])
        rest = candidates[n:]
        while rest and (views is None or len(views) < n):
            need = n - (len(views) if views is not None else 0)
            more = self.load(s, rest[:need])
            rest = rest[need:]
            if more is not None:
                views = more if views is None else _cat_views(views, more)
        return views


def _cat_views(a: Views, b: Views) -> Views:
    return Views(torch.cat([a.images, b.images]), torch.cat([a.masks, b.masks]),
                 torch.cat([a.valid, b.valid]), Cameras.cat([a.cameras, b.cameras]),
                 a.frame_numbers + b.frame_numbers, a.image_paths + b.image_paths, a.sequence, a.transform)


def training_sequences(dataset: CO3DDataset, subset: str, split: str, min_frames: int) -> list[Sequence]:
    """The set list's sequences with at least ``min_frames`` frames (SparseFusion: more than 10)."""
    seqs = dataset.sequences(subset, split)
    if not seqs:
        raise UserError(f"no sequences in {dataset.category}/{subset}/{split} under {dataset.root}")
    long_enough = [s for s in seqs if len(s.frames) >= min_frames]
    if not long_enough:
        most = max(len(s.frames) for s in seqs)
        raise UserError(f"no sequence of {dataset.category}/{subset}/{split} has at least {min_frames} frames "
                        f"(the longest has {most}); lower min_frames")
    return long_enough


class TrainViews(Dataset):
    """Training examples: per index one sequence, V context views and one query view.

    An example holds ``context_images (V,3,H,W)``, ``context_masks (V,1,H,W)``,
    ``context_valid (V,1,H,W)``, ``context_R (V,3,3)``, ``context_t (V,3)``, ``context_K (V,3,3)``,
    ``context_frames (V,)``, the same for the query with V = 1 (``query_image``, ``query_mask``,
    ``query_valid``, ``query_R``, ``query_t``, ``query_K``, ``query_frame``), ``height``,
    ``width`` and the ``sequence`` name.

    Index ``i`` maps to sequence ``i % len(sequences)``; its frames, V and the query come from a
    generator seeded by (seed, i, epoch) (:meth:`set_epoch`), so examples are the same in every
    process and on every run. Images are float in [0, 1], foreground-masked as the options say.
    """

    def __init__(self, dataset: CO3DDataset, subset: str = "fewview_train", split: str = "train",
                 options: CO3DOptions | None = None, min_frames: int = 11, frames_per_sample: int = 20,
                 contexts: tuple[int, int] = (2, 5), cache: bool = True, seed: int = 0,
                 samples_per_epoch: int | None = None, progress: bool = True,
                 query_in_contexts: bool = False):
        lo, hi = (int(c) for c in contexts)
        if not 1 <= lo <= hi:
            raise UserError(f"contexts must be (min, max) with 1 <= min <= max, got {tuple(contexts)}")
        if frames_per_sample < hi + 1:
            raise UserError(f"frames_per_sample={frames_per_sample} cannot hold {hi} contexts + 1 query")
        self.contexts, self.frames_per_sample = (lo, hi), frames_per_sample
        self.query_in_contexts = bool(query_in_contexts)
        self.seed, self.epoch = seed, 0
        seqs = training_sequences(dataset, subset, split, min_frames)
        most = max(len(s.frames) for s in seqs)
        if most < hi + 1:
            raise UserError(f"dataset has at most {most} views per sequence, fewer than the {hi} contexts "
                            f"+ 1 query asked for ({dataset.category}/{subset}/{split})")
        self.store = FrameStore(dataset, seqs, options or CO3DOptions(), cache, progress)
        usable = [s for s in range(len(self.store)) if self.store.frame_count(s) >= hi + 1]
        if not usable:
            raise UserError(f"no sequence of {dataset.category}/{subset}/{split} has {hi + 1} readable frames "
                            f"for {hi} contexts + 1 query")
        if len(usable) < len(self.store):
            warnings.warn(f"{len(self.store) - len(usable)} sequence(s) with fewer than {hi + 1} readable frames "
                          "are not used", stacklevel=2)
        self.usable = usable
        self.samples_per_epoch = samples_per_epoch

    def __len__(self) -> int:
        return self.samples_per_epoch or len(self.usable)

    def set_epoch(self, epoch: int) -> None:
        """Epoch of the next draws (part of every example's seed)."""
        self.epoch = int(epoch)

    @property
    def sequence_names(self) -> list[str]:
        return [self.store.sequences[s].name for s in self.usable]

    def __getitem__(self, i: int) -> dict:
        return self.example(i)

    def example(self, i: int, epoch: int | None = None) -> dict:
        """Example ``i`` of ``epoch`` (default: the current epoch, see :meth:`set_epoch`)."""
        lo, hi = self.contexts
        epoch = self.epoch if epoch is None else int(epoch)
        for attempt in range(len(self.usable)):
            g = torch.Generator().manual_seed(example_seed(self.seed, int(i), epoch))
            s = self.usable[(int(i) + attempt) % len(self.usable)]
            n = self.store.frame_count(s)
            pool = torch.randperm(n, generator=g)[: self.frames_per_sample].tolist()
            v = int(torch.randint(lo, hi + 1, (1,), generator=g))
            views = self.store.load_readable(s, pool, v + 1)
            if views is not None and len(views) >= lo + 1:
                v = min(v, len(views) - 1)
                return self._example(views, v, self._query_context(g, v, min(n, self.frames_per_sample)))
        raise RuntimeError("no readable training example left")  # every frame of every sequence failed

    def _query_context(self, g: torch.Generator, v: int, pool: int) -> int | None:
        """With ``query_in_contexts``: the context that is also the query, or None.

        SparseFusion draws the query and the V contexts independently from the same ``pool``
        frames, so the query is a context with probability V / pool, then any one of them.
        """
        if not self.query_in_contexts:
            return None
        if float(torch.rand((), generator=g)) >= v / pool:
            return None
        return int(torch.randint(v, (1,), generator=g))

    @staticmethod
    def _example(views: Views, v: int, query_context: int | None = None) -> dict:
        """Split loaded frames into contexts (the first v) and the query (the next, or context ``query_context``)."""
        cams = views.cameras
        out = {"sequence": views.sequence, "height": cams.height, "width": cams.width}
        q = v if query_context is None else query_context
        for prefix, plural, sl in (("context", "s", slice(0, v)), ("query", "", slice(q, q + 1))):
            out[f"{prefix}_image{plural}"] = views.images[sl]
            out[f"{prefix}_mask{plural}"] = views.masks[sl]
            out[f"{prefix}_valid"] = views.valid[sl]
            out[f"{prefix}_R"], out[f"{prefix}_t"], out[f"{prefix}_K"] = cams.R[sl], cams.t[sl], cams.K[sl]
            out[f"{prefix}_frame{plural}"] = torch.tensor(views.frame_numbers[sl])
        return out


class TrainFrames(Dataset):
    """Single frames of a :class:`FrameStore` (autoencoder training and validation).

    ``frames``: (sequence, frame) pairs to serve; default every frame. An unreadable frame
    (on-demand stores) is replaced by the next one in the list.
    """

    def __init__(self, store: FrameStore, frames: list[tuple[int, int]] | None = None):
        self.store = store
        self.frames = frames if frames is not None else [
            (s, j) for s in range(len(store)) for j in range(store.frame_count(s))]
        if not self.frames:
            raise UserError("no frames to train on")

    @classmethod
    def evenly(cls, store: FrameStore, n: int) -> "TrainFrames":
        """``n`` frames spread evenly over all frames of the store (validation sets)."""
        every = cls(store)
        pick = torch.linspace(0, len(every.frames) - 1, min(n, len(every.frames))).round().long().tolist()
        return cls(store, [every.frames[k] for k in pick])

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict:
        for k in range(len(self.frames)):
            s, j = self.frames[(int(i) + k) % len(self.frames)]
            views = self.store.load(s, [j])
            if views is not None:
                return {"image": views.images[0], "mask": views.masks[0], "valid": views.valid[0]}
        raise RuntimeError("no readable frame left")


def fixed_examples(dataset: CO3DDataset, subset: str, split: str, options: CO3DOptions, n: int,
                   min_frames: int, frames_per_sample: int, contexts: tuple[int, int], seed: int = 0) -> list[dict]:
    """The first ``n`` examples (epoch 0) of a set list: a validation set that is the same on every run."""
    views = TrainViews(dataset, subset, split, options, min_frames=min_frames, frames_per_sample=frames_per_sample,
                       contexts=contexts, cache=False, seed=seed, progress=False)
    return [views.example(i, epoch=0) for i in range(min(n, len(views)))]


def collate_single(batch: list[dict]) -> dict:
    """Collate for batch size 1 (one sequence per step): the example itself."""
    if len(batch) != 1:
        raise ValueError(f"collate_single expects batches of one example, got {len(batch)}")
    return batch[0]


def collate_examples(batch: list[dict]) -> dict | list[dict]:
    """Collate for view-conditioned training: one example as itself, several as a list.

    Examples of a batch may have different numbers of context views, so they are not stacked;
    the step function runs the view-dependent part per example and batches the rest.
    """
    return batch[0] if len(batch) == 1 else list(batch)


def cameras_of(example: dict, prefix: str) -> Cameras:
    """The ``context`` or ``query`` cameras of an example."""
    return Cameras(example[f"{prefix}_R"], example[f"{prefix}_t"], example[f"{prefix}_K"],
                   example["height"], example["width"])

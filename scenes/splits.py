"""The evaluation split shared by every method: which frames are inputs and which are targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from .co3d import CO3DDataset, CO3DOptions, Sequence, Views
from .errors import UserError

N_EVAL_FRAMES = 32


def eval_frame_indices(n_frames: int, scene_index: int, views: int, n_eval: int = N_EVAL_FRAMES
                       ) -> tuple[list[int], list[int]]:
    """SparseFusion's evaluation split of one sequence: (input indices, target indices).

    ``n_eval`` frames evenly spaced over the sequence (``linspace``); inputs = the first
    ``views`` of ``randperm(n_eval)`` seeded with the scene index; targets = the rest.
    """
    idx = torch.linspace(0, n_frames - 1, min(n_eval, n_frames)).long().tolist()
    if views < 1 or views >= len(idx):
        raise UserError(f"a scene with {len(idx)} frames cannot give {views} input view(s) and at least one target")
    g = torch.Generator().manual_seed(scene_index)
    perm = torch.randperm(len(idx), generator=g).tolist()
    inputs = [idx[i] for i in perm[:views]]
    targets = [idx[i] for i in sorted(perm[views:])]
    assert not set(inputs) & set(targets)
    return inputs, targets


@dataclass
class EvalScene:
    """One evaluation scene: input views and target views (ground truth for metrics only)."""

    index: int
    name: str
    inputs: Views
    targets: Views


def eval_scenes(
    dataset: CO3DDataset, sequences: list[Sequence], views: int, options: CO3DOptions,
    n_eval: int = N_EVAL_FRAMES, skip=None,
) -> Iterator[EvalScene]:
    """Evaluation scenes of sequences in set-list order; scene index = position in that order.

    ``skip(index)`` returning True leaves a scene out without loading it (sharding).
    """
    for index, seq in enumerate(sequences):
        if skip is not None and skip(index):
            continue
        inputs, targets = eval_frame_indices(len(seq.frames), index, views, n_eval)
        loaded = dataset.load(seq, options, inputs + targets)
        yield EvalScene(index, seq.name, loaded.select(range(views)),
                        loaded.select(range(views, len(loaded))))


def eval_sequences(dataset: CO3DDataset, subset: str, split: str, max_scenes: int | None = None
                   ) -> list[Sequence]:
    """The sequences an evaluation uses: the set list's part, the first ``max_scenes`` of them."""
    seqs = dataset.sequences(subset, split)
    if not seqs:
        raise UserError(f"no sequences in {dataset.category}/{subset}/{split} under {dataset.root}")
    return seqs[:max_scenes]

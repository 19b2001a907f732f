"""How much the benchmark's masking order alone costs a field: the ground truth against itself.

The benchmark (implicitron's order) resizes the image bilinearly, resizes the mask with nearest
neighbours, then multiplies: an edge pixel whose centre is inside the object keeps the colour of
the background around it (white in the synthetic data), and one whose centre is outside is black
however much of the object covers it. A field with a black background renders colour × coverage
instead. This script scores that physically consistent image (the same frame masked before
resizing, ``soft_masks``) against the benchmark's ground truth at the photometric check's targets.

    python -m pipelines.mask_order --max-scenes 5
"""

from __future__ import annotations

import argparse

import torch

from scenes.co3d import CO3DDataset, CO3DOptions, prepare_frame
from scenes.io import read_image
from scenes.splits import eval_frame_indices, eval_sequences

from .metrics import psnr, psnr_fg


def masking_order_psnr(root: str, category: str, max_scenes: int, views: int = 24, size: int = 64,
                       n_eval: int = 32) -> list[tuple[str, float, float]]:
    """(scene, PSNR, foreground PSNR) of the soft-masked targets against the benchmark's targets."""
    ds = CO3DDataset(root, category)
    hard_opt = CO3DOptions(crop=True, image_size=size, normalize=False, masked=True)
    soft_opt = CO3DOptions(crop=True, image_size=size, normalize=False, masked=True, soft_masks=True)
    rows = []
    for index, seq in enumerate(eval_sequences(ds, "fewview_dev", "test", max_scenes)):
        _, targets = eval_frame_indices(len(seq.frames), index, views, n_eval)
        frames = [seq.frames[i] for i in targets]
        gt, soft, masks, valid = [], [], [], []
        for fr, cam in zip(frames, ds.raw_cameras(frames)):
            img = torch.from_numpy(read_image(ds.resolve(fr["image"]["path"]), "RGB")).permute(2, 0, 1)
            mask = torch.from_numpy(read_image(ds.resolve(fr["mask"]["path"]), "L"))[None]
            g, m, v, _ = prepare_frame(img, mask, cam, hard_opt)
            gt.append(g), masks.append(m), valid.append(v)
            soft.append(prepare_frame(img, mask, cam, soft_opt)[0])
        gt, soft, masks, valid = (torch.stack(x) for x in (gt, soft, masks, valid))
        rows.append((seq.name, float(psnr(soft, gt, valid).mean()), float(psnr_fg(soft, gt, masks).mean())))
    return rows


def main() -> None:
    """Print the per-scene and mean PSNR of the soft-masked targets against the benchmark's."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/pybullet-objects")
    ap.add_argument("--category", default="random_objects")
    ap.add_argument("--max-scenes", type=int, default=5)
    args = ap.parse_args()
    rows = masking_order_psnr(args.data, args.category, args.max_scenes)
    for name, p, pf in rows:
        print(f"{name}: PSNR {p:.2f}, foreground PSNR {pf:.2f}")
    print(f"mean over {len(rows)}: PSNR {sum(r[1] for r in rows) / len(rows):.2f}, "
          f"foreground PSNR {sum(r[2] for r in rows) / len(rows):.2f}")


if __name__ == "__main__":
    main()

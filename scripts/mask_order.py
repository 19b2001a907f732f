"""How much the benchmark's masking order alone costs a field: the ground truth against itself.

The benchmark (implicitron's order) resizes the image bilinearly, resizes the mask with nearest
neighbours, then multiplies: an edge pixel whose centre is inside the object keeps the colour of
the background around it (white in the synthetic data), and one whose centre is outside is black
however much of the object covers it. A field with a black background renders colour × coverage
instead. This script scores that physically consistent image (the same frame masked before
resizing, ``soft_masks``) against the benchmark's ground truth at the photometric check's targets.

    python scripts/mask_order.py --max-scenes 5
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from pipelines.common.data_config import DataConfig, scenes_of
from pipelines.common.metrics import psnr, psnr_fg


def masking_order_psnr(root: str, category: str, max_scenes: int, views: int = 24, size: int = 64
                       ) -> list[tuple[str, float, float]]:
    """(scene, PSNR, foreground PSNR) of the soft-masked targets against the benchmark's targets."""
    hard = DataConfig(root=root, category=category, views=views, image_size=size, max_scenes=max_scenes,
                      normalize=False)
    rows = []
    for gt, soft in zip(scenes_of(hard), scenes_of(replace(hard, soft_masks=True))):
        t, s = gt.targets, soft.targets
        rows.append((gt.name, float(psnr(s.images, t.images, t.valid).mean()),
                     float(psnr_fg(s.images, t.images, t.masks).mean())))
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

"""Silhouette area ratio of DFM samples at the target each one denoised (the least-seen view).

Reads an `evaluate` or `compare` output folder of the `dfm` method (its `scenes/*.json` rows keep
per-target metrics and the index of the denoised target) and prints, per scene and as a median,
the predicted silhouette area over the true mask's at that target; 1 is the right size.

    python scripts/dfm_least_seen_silhouette.py outputs/compare/<run>/<category>/dfm
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def least_seen_areas(method_dir: Path) -> dict[str, float]:
    """Scene name -> silhouette area ratio at its denoised target."""
    out = {}
    for file in sorted((method_dir / "scenes").glob("*.json")):
        row = json.loads(file.read_text())
        out[file.stem] = row["per_target"]["silhouette_area"][row["denoised_target"]]
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    areas = least_seen_areas(Path(argv[0]))
    if not areas:
        print(f"no scenes/*.json under {argv[0]}", file=sys.stderr)
        return 1
    for name, a in areas.items():
        print(f"{name}\t{a:.3f}")
    within = sum(0.75 <= a <= 1.25 for a in areas.values())
    print(f"median {statistics.median(areas.values()):.3f} over {len(areas)} scenes; "
          f"within 25% of the true area: {within}/{len(areas)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Our torch hash grid (``distill.encoding.TorchHashGrid``) against nerfstudio's torch ``HashEncoding``.

Same levels, table size, features per level and resolutions, the same points in [0, 1]³, in one
process, the two alternated; each figure is the median over ``--pairs`` pairs of forward +
backward (of a fixed random projection of the features) milliseconds, and the ratio is the median
of the per-pair ratios nerfstudio / ours (> 1: ours is faster). Grids: ``paper`` (16 levels × 2,
2^16 entries, 16 → 3072) and ``fast`` (the demo and fast presets' field: 8 levels × 2, 2^14, 16 → 256).

nerfstudio is a benchmark dependency only, and a heavy one (it pins numpy < 2 and nerfacc 0.5.2).
Its encoding module needs only torch and jaxtyping, so it is enough to install it beside the
project without its dependencies::

    .venv/bin/pip install --no-deps nerfstudio jaxtyping wadler_lindig
    .venv/bin/python scripts/bench_hash_grid.py --out outputs/bench/hash_grid.json

Its ``utils.math`` imports the viewer's ``viser.transforms`` for code the encoding never calls; the
script stands in an empty module for it when viser is absent.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
import types
from pathlib import Path

import torch

from distill.encoding import HashGridConfig, TorchHashGrid

GRIDS = {
    "paper": HashGridConfig(),
    "fast": HashGridConfig(n_levels=8, log2_table_size=14, base_resolution=16, finest_resolution=256),
}


def nerfstudio_encoding(cfg: HashGridConfig) -> torch.nn.Module:
    """nerfstudio's torch HashEncoding with ``cfg``'s sizes (exits with one line if nerfstudio is missing)."""
    if importlib.util.find_spec("nerfstudio") is None:
        sys.exit("nerfstudio is not installed: .venv/bin/pip install --no-deps nerfstudio jaxtyping wadler_lindig")
    if "viser" not in sys.modules and importlib.util.find_spec("viser") is None:
        for name in ("viser", "viser.transforms"):
            sys.modules.setdefault(name, types.ModuleType(name))
    from nerfstudio.field_components.encodings import HashEncoding

    return HashEncoding(num_levels=cfg.n_levels, min_res=cfg.base_resolution, max_res=cfg.finest_resolution,
                        log2_hashmap_size=cfg.log2_table_size, features_per_level=cfg.features_per_level,
                        implementation="torch")


def fwd_bwd_ms(encoding: torch.nn.Module, x: torch.Tensor, probe: torch.Tensor) -> float:
    """Milliseconds of one forward + backward of ``(encoding(x) · probe).sum()``."""
    encoding.zero_grad(set_to_none=True)
    start = time.perf_counter()
    (encoding(x) * probe).sum().backward()
    return (time.perf_counter() - start) * 1000


def compare(cfg: HashGridConfig, n_points: int, pairs: int) -> dict:
    """Median ms of each and the median per-pair ratio nerfstudio / ours."""
    ours, theirs = TorchHashGrid(cfg), nerfstudio_encoding(cfg)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n_points, 3, generator=g)
    probe = torch.randn(n_points, cfg.output_dim, generator=g)
    assert theirs(x).shape == ours(x).shape == (n_points, cfg.output_dim)
    fwd_bwd_ms(ours, x, probe), fwd_bwd_ms(theirs, x, probe)  # warm-up
    t_ours, t_theirs = [], []
    for _ in range(pairs):
        t_ours.append(fwd_bwd_ms(ours, x, probe))
        t_theirs.append(fwd_bwd_ms(theirs, x, probe))
    ratios = [b / a for a, b in zip(t_ours, t_theirs)]
    return {"ours_ms": statistics.median(t_ours), "nerfstudio_ms": statistics.median(t_theirs),
            "ratio": statistics.median(ratios)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--points", nargs="+", type=int, default=[2**16, 2**18])
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--out", default="outputs/bench/hash_grid.json")
    args = parser.parse_args()
    rows = []
    print("| grid | threads | points | nerfstudio ms | ours ms | nerfstudio / ours |\n|---|---:|---:|---:|---:|---:|")
    for grid in args.grids:
        for threads in args.threads:
            torch.set_num_threads(threads)
            for n in args.points:
                row = {"grid": grid, "threads": threads, "points": n, **compare(GRIDS[grid], n, args.pairs)}
                rows.append(row)
                print(f"| {grid} | {threads} | 2^{n.bit_length() - 1} | {row['nerfstudio_ms']:.1f} | "
                      f"{row['ours_ms']:.1f} | {row['ratio']:.2f} |", flush=True)
    from pipelines.common.runtime import machine_info

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine_info(), "pairs": args.pairs,
                                          "rows": rows}, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()

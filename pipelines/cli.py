"""The ``sparsefusion`` command line (also ``python -m pipelines``).

Every command takes ``--config PRESET|FILE``, flags that are shortcuts for config keys, and
``key.sub=value`` overrides (applied last). A user's mistake ends with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

# Before torch is imported: OpenMP threads that spin while waiting slow training up to 4x on a
# small machine that another process also uses; sleeping costs nothing measurable when idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from scenes.errors import UserError  # noqa: E402

from . import __version__  # noqa: E402
from .config import describe, load_config, preset_path  # noqa: E402

# Flags shared by every command that reads scenes: flag -> (config key, type, help).
DATA_FLAGS = {
    "data": ("data.root", str, "dataset root in the CO3D v2 layout"),
    "category": ("data.category", str, "category folder"),
    "subset": ("data.subset", str, "set list name (fewview_dev, fewview_train, ...)"),
    "split": ("data.split", str, "set list part (train, val, test)"),
    "views": ("data.views", int, "input views per scene"),
    "image-size": ("data.image_size", int, "square image side"),
    "max-scenes": ("data.max_scenes", int, "only the first N scenes"),
    "out": ("out", str, "output folder"),
}


@dataclass(frozen=True)
class Items:
    """A list flag whose values may be space- or comma-separated (``--methods a,b c``), each read by ``kind``."""

    kind: type = str


@dataclass
class Command:
    """A subcommand: its config class, flag shortcuts, and the function that runs it."""

    name: str
    help: str
    config: Callable[[], type]
    run: Callable[[Any], Any]
    flags: dict[str, tuple[str, type | Items, str]]  # flag -> (config key, type, help); list: space-separated
    switches: dict[str, tuple[str, str]] | None = None  # boolean flags -> (key, help)
    default_preset: Callable[[Any], str] | None = None  # preset without --config, from the flag-only config
    plan: Callable[[Any, str, bool], str] | None = None  # first line printed: what will run


def _evaluate_cmd() -> Command:
    from . import evaluate as ev

    return Command(
        "evaluate", "evaluate a method on the shared protocol", lambda: ev.EvaluateConfig,
        _print_result(ev.evaluate),
        {"method": ("method", str, "method name"), **DATA_FLAGS,
         "checkpoint": ("checkpoint", str, "model folder"), "device": ("device", str, "cpu, cuda, auto")},
    )


def _compare_cmd() -> Command:
    from . import compare as cp

    return Command(
        "compare", "run several methods on the same scenes; one table, image grid and turntables",
        lambda: cp.CompareConfig, _print_result(cp.compare),
        {"methods": ("methods", Items(), "methods in table order (a b c or a,b,c)"), **DATA_FLAGS,
         "categories": ("categories", Items(), "categories (default: --category)"),
         "vldm": ("models.vldm", str, "VLDM folder (eft, vldm, sparsefusion*)"),
         "pixelnerf": ("models.pixelnerf", str, "pixelNeRF folder"), "dfm": ("models.dfm", str, "DFM folder"),
         "device": ("device", str, "cpu, cuda, auto")},
    )


def _make_dataset_cmd() -> Command:
    from . import make_dataset as md

    return Command(
        "make-dataset", "render the pybullet-objects dataset in the CO3D v2 layout",
        lambda: md.MakeDatasetConfig, md.run,
        {"data": ("root", str, "output dataset root"), "objects": ("objects", str, "e.g. 800-899 or 0-799,800-899"),
         "views": ("views", int, "views per object"), "image-size": ("image_size", int, "render size"),
         "workers": ("workers", int, "parallel workers"), "seed": ("seed", int, "seed")},
        {"include-reserved": ("include_reserved", "allow the held-out objects 900-999")},
    )


def _cameras_cmd() -> Command:
    from . import cameras_export as ce

    return Command(
        "cameras", "export every frame's camera exactly as the files give it (OpenCV)",
        lambda: ce.CamerasConfig, ce.run,
        {"data": ("root", str, "dataset root"), "category": ("category", str, "category"),
         "out": ("out", str, "output JSON"), "plot": ("plot", str, "optional PNG plot of the cameras"),
         "cameras": ("cameras", str, "a camera file to validate and plot instead of a dataset")},
    )


def _demo_cmd() -> Command:
    from . import demo

    return Command("demo", "the embedded demo: data, evaluation, report", lambda: demo.DemoConfig,
                   demo.run, {"out": ("out", str, "output folder")})


def _train_vae_cmd() -> Command:
    from . import train_vae as tv

    return Command(
        "train-vae", "train the small autoencoder of the demo/tiny presets on the training frames",
        lambda: tv.TrainVAEConfig, tv.run,
        {**{k: v for k, v in DATA_FLAGS.items() if k != "views"},
         "steps": ("train.steps", int, "optimizer steps in total"),
         "resume": ("train.resume", str, "'latest' or a checkpoint folder"),
         "init-from": ("train.init_from", str, "a saved model/ folder to start from (weights only)")},
    )


def _train_vldm_cmd() -> Command:
    from . import train_vldm as tv

    return Command(
        "train-vldm", "train the EFT and the view-conditioned latent diffusion model jointly",
        lambda: tv.TrainVLDMConfig, tv.run,
        {**{k: v for k, v in DATA_FLAGS.items() if k != "views"},
         "vae": ("model.vae", str, "autoencoder folder or SD checkpoint file"),
         "steps": ("train.steps", int, "optimizer steps in total"),
         "resume": ("train.resume", str, "'latest' or a checkpoint folder"),
         "init-from": ("train.init_from", str, "a saved model/ folder to start from (weights only)")},
    )


def _train_pixelnerf_cmd() -> Command:
    from . import train_pixelnerf as tp

    return Command(
        "train-pixelnerf", "train the pixelNeRF baseline on random ray batches",
        lambda: tp.TrainPixelNeRFConfig, tp.run,
        {**{k: v for k, v in DATA_FLAGS.items() if k != "views"},
         "steps": ("train.steps", int, "optimizer steps in total"),
         "resume": ("train.resume", str, "'latest' or a checkpoint folder"),
         "init-from": ("train.init_from", str, "a saved model/ folder to start from (weights only)")},
    )


def _train_dfm_cmd() -> Command:
    from . import train_dfm as td

    return Command(
        "train-dfm", "train forward-model diffusion (DFM), optionally warm-started from a pixelNeRF",
        lambda: td.TrainDFMConfig, td.run,
        {**{k: v for k, v in DATA_FLAGS.items() if k != "views"},
         "warm-start": ("warm_start", str, "pixelNeRF folder to start from"),
         "steps": ("train.steps", int, "optimizer steps in total"),
         "resume": ("train.resume", str, "'latest' or a checkpoint folder"),
         "init-from": ("train.init_from", str, "a saved model/ folder to start from (weights only)")},
    )


def _figure_cmd() -> Command:
    from . import figures

    return Command(
        "figure", "draw an image grid of what a model does (e.g. inputs, truth, EFT, VLDM samples)",
        lambda: figures.FigureConfig, figures.run,
        {"kind": ("kind", str, "vldm-samples"), **DATA_FLAGS,
         "checkpoint": ("checkpoint", str, "model folder"), "out": ("out", str, "output PNG")},
    )


def _bench_cmd() -> Command:
    from . import bench

    return Command("bench", "time the toolkit's hot paths (medians of repeated runs, JSON)",
                   lambda: bench.BenchConfig, bench.run,
                   {"checkpoint": ("checkpoint", str, "VLDM folder"), "out": ("out", str, "output JSON"),
                    "device": ("device", str, "cpu, cuda, auto"),
                    "preset": ("preset", str, "reconstruct preset of the reconstruction figure")})


def _reconstruct_cmd() -> Command:
    from . import reconstruct as rc
    from . import reconstruct_plan as plan

    return Command(
        "reconstruct", "fit a 3D field per scene from its input views (SparseFusion, SDS or photometric)",
        lambda: rc.ReconstructConfig, rc.run,
        {"mode": ("mode", str, "sparsefusion, sds or photometric"), **DATA_FLAGS,
         "scene": ("scene", str, "only this sequence"),
         "images": ("images", list, "custom input: image files"),
         "cameras": ("cameras", str, "custom input: OpenCV camera JSON or transforms.json"),
         "frames": ("frames", Items(int), "custom input: these frames of the camera file (e.g. 3,17,42)"),
         "masks": ("masks", list, "custom input: mask files (default: the images' alpha)"),
         "checkpoint": ("checkpoint", str, "VLDM folder"), "device": ("device", str, "cpu, cuda, auto"),
         "seed": ("seed", int, "seed")},
        {"resume": ("resume", "skip finished scenes, continue unfinished ones from their checkpoint")},
        default_preset=plan.default_preset, plan=plan.plan_line,
    )


COMMANDS = {c.__name__: c for c in (_make_dataset_cmd, _evaluate_cmd, _compare_cmd, _reconstruct_cmd, _cameras_cmd,
                                    _demo_cmd, _train_vae_cmd, _train_vldm_cmd, _train_pixelnerf_cmd, _train_dfm_cmd,
                                    _figure_cmd, _bench_cmd)}


def _print_result(fn):
    def run(cfg):
        result = fn(cfg)
        if isinstance(result, dict) and "out" in result:
            print(f"results in {result['out']}")
        return result

    return run


def _metavar(key: str, typ) -> str:
    """The value name shown in --help: N for numbers, else the config key's last part (``data.root`` -> ROOT)."""
    kind = typ.kind if isinstance(typ, Items) else typ
    return "N" if kind in (int, float) else key.rsplit(".", 1)[-1].upper()


def _parser(commands: list[Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsefusion", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"sparsefusion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for cmd in commands:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        p.add_argument("--config", metavar="PRESET", help="preset name under configs/<command>/ or a YAML file")
        p.add_argument("--show-config", action="store_true", help="print the resolved config with field docs and exit")
        for flag, (key, typ, help_) in cmd.flags.items():
            common = {"dest": f"flag:{key}", "metavar": _metavar(key, typ), "help": f"{help_} (= {key})"}
            if typ is list or isinstance(typ, Items):
                p.add_argument(f"--{flag}", nargs="+", **common)
            else:
                p.add_argument(f"--{flag}", type=typ, **common)
        for flag, (key, help_) in (cmd.switches or {}).items():
            p.add_argument(f"--{flag}", action="store_true", default=None, dest=f"flag:{key}", help=f"{help_} (= {key}=true)")
        if cmd.name == "evaluate":
            p.add_argument("--list-methods", action="store_true", help="list the registered methods and exit")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, applied last")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sparsefusion`` console script."""
    commands = [make() for make in COMMANDS.values()]
    parser = _parser(commands)
    args, unknown = parser.parse_known_args(argv)  # overrides may also follow options
    if [u for u in unknown if not _is_override(u)]:
        parser.error(f"unrecognized arguments: {' '.join(u for u in unknown if not _is_override(u))}")
    cmd = next(c for c in commands if c.name == args.command)
    overrides = list(args.overrides) + unknown
    for key, value in vars(args).items():  # list flags (--images a b) swallow a following key=value
        if key.startswith("flag:") and isinstance(value, list):
            setattr(args, key, [v for v in value if not _is_override(v)] or None)
            overrides += [v for v in value if _is_override(v)]
    try:
        for flag, (key, typ, _) in cmd.flags.items():
            if isinstance(typ, Items) and getattr(args, f"flag:{key}") is not None:
                setattr(args, f"flag:{key}", _items(flag, getattr(args, f"flag:{key}"), typ.kind))
        if getattr(args, "list_methods", False):
            from .methods import available_methods

            print("\n".join(available_methods()))
            return 0
        flags = [f"{k[5:]}={_yaml_value(v)}" for k, v in vars(args).items() if k.startswith("flag:") and v is not None]
        preset = args.config
        if preset is None and cmd.default_preset is not None:  # e.g. reconstruct: fast on a CPU, paper on CUDA
            preset = cmd.default_preset(load_config(cmd.config(), None, flags + overrides))
        yaml_path = preset_path(cmd.name, preset) if preset else None
        cfg = load_config(cmd.config(), yaml_path, flags + overrides)
        if args.show_config:
            print("\n".join(describe(cfg)))
            return 0
        if cmd.plan is not None and os.environ.get("RANK", "0") == "0":
            print(cmd.plan(cfg, preset, args.config is None), flush=True)
        cmd.run(cfg)
        from .processes import end_process_group

        end_process_group()
    except UserError as err:
        print(f"sparsefusion {cmd.name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sparsefusion {cmd.name}: interrupted", file=sys.stderr)
        return 130
    return 0


def _items(flag: str, words: list[str], kind: type) -> list:
    """The values of an :class:`Items` flag: words split at commas, each read by ``kind``."""
    parts = [part.strip() for word in words for part in word.split(",") if part.strip()]
    try:
        return [kind(part) for part in parts]
    except ValueError:
        raise UserError(f"--{flag} takes {kind.__name__} values (e.g. --{flag} 3,17,42), got {' '.join(words)!r}") from None


def _is_override(text: str) -> bool:
    """Whether a word is a ``key.sub=value`` override (a dotted identifier before the '=')."""
    key = text.split("=", 1)[0]
    return "=" in text and all(part.isidentifier() for part in key.split("."))


def _yaml_value(value) -> str:
    """A flag value as a dotlist value (strings quoted so '1e3' or 'null' stay strings)."""
    if isinstance(value, list):
        return "[" + ",".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)

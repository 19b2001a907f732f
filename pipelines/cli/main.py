"""The ``sparsefusion`` command line (also ``python -m pipelines``).

Every command takes ``--config PRESET|FILE``, flags that are shortcuts for config keys, and
``key.sub=value`` overrides (applied last). A user's mistake ends with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

# Before torch is imported: OpenMP threads that spin while waiting slow training up to 4x on a
# small machine that another process also uses; sleeping costs nothing measurable when idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pipelines import __version__  # noqa: E402
from pipelines.cli.commands import COMMANDS, Command, Items, resolve  # noqa: E402
from pipelines.common.config import describe, load_config, preset_path  # noqa: E402
from scenes.errors import UserError  # noqa: E402


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
    commands = COMMANDS
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
            print("\n".join(resolve("pipelines.harness.methods:available_methods")()))
            return 0
        flags = [f"{k[5:]}={_yaml_value(v)}" for k, v in vars(args).items() if k.startswith("flag:") and v is not None]
        config_class = resolve(cmd.config)  # the only command module imported
        preset = args.config
        if preset is None and cmd.default_preset is not None:  # e.g. reconstruct: fast on a CPU, paper on CUDA
            preset = resolve(cmd.default_preset)(load_config(config_class, None, flags + overrides))
        yaml_path = preset_path(cmd.name, preset) if preset else None
        cfg = load_config(config_class, yaml_path, flags + overrides)
        if args.show_config:
            print("\n".join(describe(cfg)))
            return 0
        if cmd.plan is not None and os.environ.get("RANK", "0") == "0":
            print(resolve(cmd.plan)(cfg, preset, args.config is None), flush=True)
        result = resolve(cmd.run)(cfg)
        if cmd.prints_out and isinstance(result, dict) and "out" in result:
            print(f"results in {result['out']}")
        from pipelines.common.processes import end_process_group

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

"""Typed configs: dataclasses loaded from YAML presets with ``key.sub=value`` overrides.

Every field carries a docstring line (the string right below it), shown by ``--show-config``.
A misspelled key or a wrong type is a :class:`UserError`; the resolved config is saved beside
every output as ``config.yaml``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from scenes.assets import resolve, shipped
from scenes.errors import UserError
from scenes.io import write_bytes

CONFIG_DIR = shipped("configs")  # the source tree's configs/, or a wheel's copy (scenes.assets)

T = TypeVar("T")


def preset_path(command: str, preset: str) -> Path:
    """A preset name (``configs/<command>/<name>.yaml``) or a path to a YAML file."""
    path = resolve(preset)  # configs/<command>/x.yaml also names the shipped preset from any folder
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        return path
    path = CONFIG_DIR / command / f"{preset}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in (CONFIG_DIR / command).glob("*.yaml"))
        raise UserError(f"unknown preset {preset!r} for {command} (presets: {', '.join(names) or 'none'})")
    return path


def load_config(cls: type[T], yaml_path: Path | None = None, overrides: list[str] = ()) -> T:
    """Build ``cls`` from its defaults, then a YAML file, then ``key=value`` overrides."""
    cfg = OmegaConf.structured(cls)
    try:
        if yaml_path is not None:
            cfg = OmegaConf.merge(cfg, OmegaConf.load(yaml_path))
        for item in overrides:
            if "=" not in item:
                raise UserError(f"override {item!r} is not of the form key=value")
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        where = f" in {yaml_path}" if yaml_path else ""
        first = str(err).splitlines()[0]
        if "not in" in first or "Key '" in first:
            raise UserError(f"unknown config key {key!r}{where}: {first} (see --show-config)") from None
        raise UserError(f"bad value for config key {key!r}{where}: {first}") from None


def to_yaml(config: Any) -> str:
    """YAML text of a config dataclass instance."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def save_config(config: Any, folder: str | Path) -> Path:
    """Write the resolved config as ``folder/config.yaml`` (atomically)."""
    path = Path(folder) / "config.yaml"
    write_bytes(path, to_yaml(config).encode())
    return path


def field_docs(cls: type) -> dict[str, str]:
    """Docstring line of each field of a dataclass (the string literal following it), base classes included."""
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = nxt.value.value.strip().splitlines()[0]
    return docs


def describe(config: Any, prefix: str = "") -> list[str]:
    """Lines ``key = value  # doc`` for every field of a config instance, nested keys dotted."""
    lines = []
    docs = field_docs(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            lines.append(f"{prefix}{f.name}:  # {docs.get(f.name, '')}")
            lines.extend(describe(value, prefix + f.name + "."))
        else:
            lines.append(f"{prefix}{f.name} = {value!r}  # {docs.get(f.name, '')}")
    return lines

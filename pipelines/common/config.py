"""Typed configs: dataclasses loaded from YAML presets with ``key.sub=value`` overrides.

Every field carries a docstring line (the string right below it), shown by ``--show-config``.
A misspelled key or a wrong type is a :class:`UserError`; so is a value outside an ``Enum``
field's names (``scenes.choices``), which the message lists. A renamed key still loads: a config
class lists ``RENAMED: ClassVar[dict[old, new]]`` (keys relative to it) and an old key is moved to
its new name with one warning (saved ``config.yaml`` files keep loading). A key that the config
sets itself from another one (``DERIVED: ClassVar[dict[key, why]]``) is refused when given. The
resolved config is saved beside every output as ``config.yaml``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import warnings
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
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


def _nested_table(cls: type, attribute: str, prefix: str = "", values_are_keys: bool = False) -> dict[str, str]:
    """A class table (``RENAMED`` or ``DERIVED``) of ``cls`` and its nested config dataclasses, keys dotted."""
    table = getattr(cls, attribute, {})
    out = {prefix + k: (prefix + v if values_are_keys else v) for k, v in table.items()}
    for f in dataclasses.fields(cls):
        sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(sub):
            out.update(_nested_table(type(sub), attribute, f"{prefix}{f.name}.", values_are_keys))
    return out


def renamed_keys(cls: type) -> dict[str, str]:
    """Old dotted key -> new dotted key for ``cls`` and its nested config dataclasses (their ``RENAMED``)."""
    return _nested_table(cls, "RENAMED", values_are_keys=True)


def derived_keys(cls: type) -> dict[str, str]:
    """Dotted key -> why it is not given (the config sets it) for ``cls`` and its nested dataclasses (``DERIVED``)."""
    return _nested_table(cls, "DERIVED")


def _refuse_derived(keys: list[str], derived: dict[str, str], where: str) -> None:
    for key in keys:
        if key in derived:
            raise UserError(f"config key {key!r}{where} cannot be given: {derived[key]}")


def _dotted(tree: dict, prefix: str = "") -> list[str]:
    """Every dotted key of a nested dict (leaves and inner nodes)."""
    out = []
    for k, v in tree.items():
        out.append(prefix + str(k))
        if isinstance(v, dict):
            out.extend(_dotted(v, f"{prefix}{k}."))
    return out


def _rename_tree(tree: dict, renamed: dict[str, str], where: str) -> dict:
    """Move every old key of a nested dict to its new dotted place (UserError when both are given)."""
    moved = []
    for old, new in renamed.items():
        *path, leaf = old.split(".")
        node = tree
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        value = node.pop(leaf)
        *path, leaf = new.split(".")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        if leaf in node:
            raise UserError(f"config key {old!r}{where} is the old name of {new!r}, which is also given: keep one")
        node[leaf] = value
        moved.append(f"{old!r} is now {new!r}")
    if moved:
        warnings.warn(f"renamed config keys{where}, read under their new names: {'; '.join(moved)}", stacklevel=3)
    return tree


def with_new_names(tree: dict, cls: type, where: str = "") -> dict:
    """A nested config dict (e.g. a saved run's ``config.yaml``) with ``cls``'s renamed keys moved to their new names."""
    return _rename_tree(tree, renamed_keys(cls), where)


def _rename_override(item: str, renamed: dict[str, str]) -> str:
    key, value = item.split("=", 1)
    if key in renamed:
        warnings.warn(f"renamed config key, read under its new name: {key!r} is now {renamed[key]!r}", stacklevel=3)
        return f"{renamed[key]}={value}"
    return item


def load_config(cls: type[T], yaml_path: Path | None = None, overrides: list[str] = ()) -> T:
    """Build ``cls`` from its defaults, then a YAML file, then ``key=value`` overrides."""
    cfg = OmegaConf.structured(cls)
    renamed, derived = renamed_keys(cls), derived_keys(cls)
    try:
        if yaml_path is not None:
            loaded = OmegaConf.load(yaml_path)
            if (renamed or derived) and isinstance(loaded, DictConfig):
                tree = _rename_tree(OmegaConf.to_container(loaded), renamed, f" in {yaml_path}")
                _refuse_derived(_dotted(tree), derived, f" in {yaml_path}")
                loaded = OmegaConf.create(tree)
            cfg = OmegaConf.merge(cfg, loaded)
        for item in overrides:
            if "=" not in item:
                raise UserError(f"override {item!r} is not of the form key=value")
            item = _rename_override(item, renamed)
            _refuse_derived([item.split("=", 1)[0]], derived, "")
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

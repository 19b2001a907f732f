"""Where the files shipped with the toolkit are: the presets (``configs/``) and the demo models (``checkpoints/demo/``).

One lookup for every kind of install. From a source tree (a clone, ``make install``'s editable
install, ``PYTHONPATH``) they are the repository's own folders, next to the packages. A wheel
(``pip install .``) carries them as package data under ``sparsefusion_assets/`` in
site-packages, next to the packages too (see ``[tool.setuptools]`` in pyproject.toml).
Paths written relative to the repository in presets and docs (``checkpoints/demo/vae/model``)
name the shipped copy when the working folder has no such path.
"""

from __future__ import annotations

from pathlib import Path

ASSETS_PACKAGE = "sparsefusion_assets"  # the wheel's folder of package data
SHIPPED = ("configs", "checkpoints")  # the top-level folders shipped

_NEXT_TO_PACKAGES = Path(__file__).resolve().parents[1]  # the repository, or site-packages
ROOT = (_NEXT_TO_PACKAGES / ASSETS_PACKAGE if (_NEXT_TO_PACKAGES / ASSETS_PACKAGE).is_dir()
        else _NEXT_TO_PACKAGES)


def shipped(*parts: str) -> Path:
    """A shipped file or folder, e.g. ``shipped("checkpoints", "demo", "vldm")``."""
    return ROOT.joinpath(*parts)


def resolve(path: str | Path) -> Path:
    """``path`` as given, unless it is relative, missing here and names a shipped file: then the shipped copy."""
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists() or not path.parts or path.parts[0] not in SHIPPED:
        return path
    copy = ROOT / path
    return copy if copy.exists() else path

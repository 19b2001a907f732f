"""File helpers: atomic writes, image and JSON reading with errors that name the file."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import UnreadableImage, UserError


_UMASK = os.umask(0)
os.umask(_UMASK)


def set_usual_mode(path: str | os.PathLike) -> None:
    """Give a file the mode a plain ``open()`` would (0666 minus the umask), e.g. after mkstemp."""
    os.chmod(path, 0o666 & ~_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    An interrupted run never leaves a half-written file under a final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        set_usual_mode(tmp)  # mkstemp makes 0600
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write bytes."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj: Any, gz: bool = False) -> None:
    """Atomically write JSON (gzip-compressed when ``gz``)."""
    data = json.dumps(obj, indent=None if gz else 1).encode()
    write_bytes(path, gzip.compress(data, mtime=0) if gz else data)


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read JSON or gzip JSON (``.jgz``/``.gz``); a missing or corrupt file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        raw = path.read_bytes()
        if path.suffix in (".jgz", ".gz"):
            raw = gzip.decompress(raw)
        return json.loads(raw)
    except (OSError, EOFError, ValueError) as err:
        raise UserError(f"{what} is not valid JSON{' (gzip)' if path.suffix in ('.jgz', '.gz') else ''}: {path} ({err})") from None


def read_image(path: str | os.PathLike, mode: str = "RGB") -> np.ndarray:
    """Read an image as float32 in [0, 1], (H, W, C) for RGB/RGBA or (H, W) for 'L'."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableImage(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert(mode), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UnreadableImage(f"cannot read image {path}: {err}") from None
    return arr


def write_image(path: str | os.PathLike, array: np.ndarray, quality: int = 95) -> None:
    """Atomically write a uint8 or [0, 1] float image (HWC or HW); format from the suffix."""
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}[path.suffix.lower()]
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format=fmt, **({"quality": quality} if fmt == "JPEG" else {}))

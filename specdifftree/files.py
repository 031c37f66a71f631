"""Writing files so that a crash never leaves half of one: the one place every module uses.

    write_atomic(path, data)   bytes -> a temporary file beside `path`, fsync, os.replace
    write_text(path, text)     the same for text
    write_json(path, obj)      JSON (NaN/inf -> null; numpy/torch scalars, Paths -> plain values)
    replace_dir(src, dst)      a finished directory put in place of an older one
    file_sha256(path)          hex sha256 of a file's bytes, read in chunks
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any


def write_atomic(path: os.PathLike | str, data: bytes) -> None:
    """Readers see the old file or the new one, never a part of it; parent directories are made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: os.PathLike | str, text: str) -> None:
    write_atomic(path, text.encode())


def write_json(path: os.PathLike | str, obj: Any) -> None:
    write_text(path, json.dumps(jsonable(obj), indent=1, allow_nan=False) + "\n")


def jsonable(value: Any) -> Any:
    """`value` made of plain JSON types: non-finite floats -> None, numpy/torch scalars -> Python
    numbers, Paths -> str, anything else unknown -> str."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return jsonable(value.item())
        except (ValueError, RuntimeError):
            pass
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def replace_dir(src: Path, dst: Path) -> None:
    """Rename src to dst; an existing dst is moved aside first and removed afterwards."""
    old = None
    if dst.exists():
        old = dst.with_name(f"{dst.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(dst, old)
    os.rename(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def file_sha256(path: os.PathLike | str) -> str:
    """Hex sha256 of the file's bytes (read 1 MiB at a time)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

"""Writing files so that a crash never leaves half of one: the one place every module uses.

    write_atomic(path, data)   bytes -> a temporary file beside `path`, fsync, os.replace
    write_text(path, text)     the same for text
    write_json(path, obj)      JSON (NaN/inf -> null; numpy/torch scalars, Paths -> plain values)
    replace_dir(src, dst)      a finished directory put in place of an older one
    file_sha256(path)          hex sha256 of a file's bytes, read in chunks, remembered while unchanged
    files_sha256(paths)        one sha256 for several files (sha256sum's lines of each, hashed)
    combined_sha256(named)     one sha256 for several named sha256s, the same way
    model_files(directory)     the weights files of a model directory (*.safetensors, else *.bin)

The weights identity of every prior (`Prior.weights_sha256`) is built from these: a single file's
identity is its plain sha256 (what `sha256sum FILE` prints), several files' the sha256 of their
`sha256sum` lines sorted by name.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping


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


_HASHED: "OrderedDict[tuple, str]" = OrderedDict()  # (path, size, mtime_ns) -> sha256, the latest 64
_HASHED_MAX = 64


def file_sha256(path: os.PathLike | str) -> str:
    """Hex sha256 of the file's bytes, read 1 MiB at a time. The digest is remembered for this
    process while the file's path, size and modification time stay the same, so a multi-GB model
    is hashed once however often its identity is asked for."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _HASHED:
        _HASHED.move_to_end(key)
        return _HASHED[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    _HASHED[key] = h.hexdigest()
    while len(_HASHED) > _HASHED_MAX:
        _HASHED.popitem(last=False)
    return _HASHED[key]


def combined_sha256(named: Mapping[str, str]) -> str:
    """One hex sha256 for several named digests: the sha256 of their `sha256sum`-style lines
    ("<digest>  <name>\n"), sorted by name. One entry gives its own digest unchanged."""
    if len(named) == 1:
        return next(iter(named.values()))
    lines = "".join(f"{digest}  {name}\n" for name, digest in sorted(named.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def files_sha256(paths: Iterable[os.PathLike | str]) -> str:
    """The identity of a set of files (`combined_sha256` of each file's sha256, named by file name);
    one file's is its own sha256, no file's is ""."""
    paths = [Path(p) for p in paths]
    return combined_sha256({p.name: file_sha256(p) for p in paths}) if paths else ""


def model_files(directory: os.PathLike | str) -> list[Path]:
    """The weights files of a model directory (a transformers save): its *.safetensors files, else its
    *.bin files, sorted; [] when it holds neither (or is not a directory)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))

"""Reading a series from a CSV file, with errors that name the file, column and row."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional

import numpy as np

from specdifftree.errors import SDTError


def read_csv_column(path: str | Path, column: Optional[str] = None) -> np.ndarray:
    """Values of one numeric column of a CSV file with a header row.  -> [L] float64

    `column` names the column; without it the file must have exactly one numeric column
    (a column is numeric when its first data row parses as a number). A header-less file of
    plain numbers, one per line, is read as a single column.
    """
    path = Path(path)
    if not path.is_file():
        raise SDTError(f"series file not found: {path}")
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise SDTError(f"{path}: the file is empty")
    header, data, first_line = rows[0], rows[1:], 2
    if _is_number(header[0]) and len(header) == 1:  # plain list of numbers, no header
        header, data, first_line = ["value"], rows, 1
    if not data:
        raise SDTError(f"{path}: no data rows below the header")
    if column is None:
        numeric = [i for i, c in enumerate(data[0]) if i < len(header) and _is_number(c)]
        if not numeric:
            raise SDTError(f"{path}: no numeric column found (columns: {', '.join(header)})")
        if len(numeric) > 1:
            names = ", ".join(header[i] for i in numeric)
            raise SDTError(f"{path}: several numeric columns ({names}); choose one with --column")
        idx = numeric[0]
    else:
        if column not in header:
            raise SDTError(f"{path}: no column '{column}' (columns: {', '.join(header)})")
        idx = header.index(column)
    values = np.empty(len(data))
    for i, row in enumerate(data):
        line = first_line + i
        cell = row[idx] if idx < len(row) else ""
        try:
            v = float(cell)
        except ValueError:
            raise SDTError(f"{path}: row {line}, column '{header[idx]}': '{cell}' is not a number") from None
        if not math.isfinite(v):
            raise SDTError(f"{path}: row {line}, column '{header[idx]}': {cell} (series must be finite)")
        values[i] = v
    return values


def check_series(x, what: str = "series", min_len: int = 1) -> np.ndarray:
    """A finite 1-D float series of at least `min_len` points, or an SDTError saying why not.  -> [L]"""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise SDTError(f"{what} must be one-dimensional, got shape {x.shape}")
    bad = np.flatnonzero(~np.isfinite(x))
    if len(bad):
        raise SDTError(f"{what} has a non-finite value ({x[bad[0]]}) at index {bad[0]}")
    if len(x) < min_len:
        raise SDTError(f"{what} has {len(x)} points; at least {min_len} are needed")
    return x


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False

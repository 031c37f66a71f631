"""Reading series from a CSV file, with errors that name the file, column and row."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from specdifftree.errors import SDTError


def read_csv_column(path: str | Path, column: Optional[str] = None) -> np.ndarray:
    """Values of one numeric column of a CSV file with a header row.  -> [L] float64

    `column` names the column; without it the file must have exactly one numeric column
    (a column is numeric when its first data row parses as a number). A header-less file of
    plain numbers, one per line, is read as a single column.
    """
    path = Path(path)
    header, data, first_line = _read_rows(path)
    if column is None:
        numeric = _numeric_columns(path, header, data)
        if len(numeric) > 1:
            names = ", ".join(header[i] for i in numeric)
            raise SDTError(f"{path}: several numeric columns ({names}); choose one with --column")
        idx = numeric[0]
    else:
        idx = _column_index(path, header, column)
    return _column_values(path, header, data, first_line, idx)


def read_csv_columns(path: str | Path, columns: Optional[Sequence[str]] = None,
                     min_len: int = 1) -> dict[str, np.ndarray]:
    """Several numeric columns of a CSV file with a header row: {name: [L] float64}, in the
    order asked. `columns` None: every numeric column (see `read_csv_column`). Each column must
    hold at least `min_len` values."""
    path = Path(path)
    header, data, first_line = _read_rows(path)
    idxs = _numeric_columns(path, header, data) if columns is None else [_column_index(path, header, c) for c in columns]
    if len(data) < min_len:
        raise SDTError(f"{path}: {len(data)} data rows; at least {min_len} are needed")
    return {header[i]: _column_values(path, header, data, first_line, i) for i in idxs}


def _read_rows(path: Path) -> tuple[list[str], list[list[str]], int]:
    """(header, data rows, file line number of the first data row); blank lines are skipped."""
    if not path.is_file():
        raise SDTError(f"series file not found: {path}")
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise SDTError(f"{path}: the file is empty")
    header, data, first_line = [c.strip() for c in rows[0]], rows[1:], 2
    if _is_number(header[0]) and len(header) == 1:  # plain list of numbers, no header
        header, data, first_line = ["value"], rows, 1
    if not data:
        raise SDTError(f"{path}: no data rows below the header")
    return header, data, first_line


def _numeric_columns(path: Path, header: list[str], data: list[list[str]]) -> list[int]:
    """Indices of the columns whose first data cell is a number; an SDTError when there are none."""
    numeric = [i for i, c in enumerate(data[0]) if i < len(header) and _is_number(c)]
    if not numeric:
        raise SDTError(f"{path}: no numeric column found (columns: {', '.join(header)})")
    return numeric


def _column_index(path: Path, header: list[str], column: str) -> int:
    if column not in header:
        raise SDTError(f"{path}: no column '{column}' (columns: {', '.join(header)})")
    return header.index(column)


def _column_values(path: Path, header: list[str], data: list[list[str]], first_line: int, idx: int) -> np.ndarray:
    """Column idx as floats; a blank, non-number or non-finite cell is an error naming its row.  -> [L]"""
    values = np.empty(len(data))
    for i, row in enumerate(data):
        values[i] = parse_cell(path, first_line + i, header[idx], row[idx] if idx < len(row) else "")
    return values


def parse_cell(path: Path, line: int, column: str, cell: str) -> float:
    """A finite float from one CSV cell, or an SDTError naming the file, row and column."""
    try:
        v = float(cell)
    except ValueError:
        raise SDTError(f"{path}: row {line}, column '{column}': '{cell.strip()}' is not a number") from None
    if not math.isfinite(v):
        raise SDTError(f"{path}: row {line}, column '{column}': {cell.strip()} (series must be finite)")
    return v


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

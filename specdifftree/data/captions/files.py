"""Captioned series from files: WFDB records (leads, units, annotated beats), chest-accelerometer
files (axes and activity labels) and CSV files (numeric columns, an optional label column).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from specdifftree.data.captions.base import Captioned, Event
from specdifftree.data.captions.levels import beat_events, label_runs
from specdifftree.errors import SDTError

ACTIVITY_MIN_SECONDS = 30.0  # shorter labelled activity runs are not stated


def load_captioned(path, columns: Sequence[str] = (), fs: Optional[float] = None,
                   label_column: Optional[str] = None) -> Captioned:
    """A file as a Captioned series:
    - a WFDB record (FILE.hea / .dat / no extension with a .hea beside it): its leads with their
      units and sampling rate; its non-normal annotated beats (.atr) as level-3 events;
    - a chest-accelerometer file (no header, five numeric columns seq,x,y,z,label): axes x, y, z
      at 52 Hz, activity runs of at least 30 s from the label column (the 5 longest);
    - any other CSV with a header: its numeric columns (or `columns`); `label_column` names a
      column of labels whose runs become activity events.
    `fs` overrides the file's sampling rate (None: the file's, else positions in points)."""
    from pathlib import Path

    from specdifftree.data.sources import ACCEL_LABELS, read_accelerometer, read_wfdb

    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".hea", ".dat", ".atr") else path
    if base.with_name(base.name + ".hea").is_file():
        rec = read_wfdb(base)
        keep = _pick(list(rec.leads), columns, path)
        chans = {rec.leads[i]: rec.signals[:, i] for i in keep}
        units = {rec.leads[i]: (rec.units or [""] * len(rec.leads))[i] for i in keep}
        events = beat_events(rec.beat_samples, rec.beat_symbols) if rec.beat_samples is not None else []
        return Captioned.build(chans, units, fs or rec.fs, events)
    if is_accelerometer(path):
        acc = read_accelerometer(path)
        keep = _pick(["x", "y", "z"], columns, path)
        chans = {f"{'xyz'[i]}-axis acceleration": acc.xyz[:, i] for i in keep}
        rate = fs or acc.fs
        events = label_runs(acc.labels, ACCEL_LABELS, rate, ACTIVITY_MIN_SECONDS)
        return Captioned.build(chans, {k: "ADC counts" for k in chans}, rate, events)
    from specdifftree.data.series import read_csv_columns

    chans = read_csv_columns(path, list(columns) or None)
    events = _label_column_events(path, label_column, fs) if label_column else []
    return Captioned.build(chans, {}, fs, events)


def _pick(names: list[str], columns: Sequence[str], path) -> list[int]:
    for c in columns:
        if c not in names:
            raise SDTError(f"{path}: no column '{c}' (columns: {', '.join(names)})")
    return [names.index(c) for c in columns] if columns else list(range(len(names)))


def is_accelerometer(path) -> bool:
    """A header-less CSV whose first row is five numbers, the last an integer label."""
    try:
        with open(path) as f:
            first = f.readline().strip().split(",")
        values = [float(c) for c in first]
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return len(values) == 5 and values[4] == int(values[4])


def _label_column_events(path, column: str, fs: Optional[float]) -> list[Event]:
    """Runs of one non-empty label in a CSV column (at least 30 s long when fs is known)."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or column not in rows[0]:
        raise SDTError(f"{path}: no label column '{column}'")
    values = [(r.get(column) or "").strip() for r in rows]
    names = sorted({v for v in values if v})
    codes = np.array([names.index(v) + 1 if v else 0 for v in values])
    return label_runs(codes, {i + 1: n for i, n in enumerate(names)}, fs or 1.0, ACTIVITY_MIN_SECONDS if fs else 0.0)

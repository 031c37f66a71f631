"""Real series sources: generic CSV, ETT, M4 wide CSV, WFDB ECG records, chest accelerometer CSV.

Formats are those of the files in shared/data (see its README). Every reader raises a one-line
SDTError naming the file (and the row, where one row is at fault) on bad data: a missing file,
wrong columns, a cell that is not a finite number, a series shorter than one encoder patch.

    read_csv_columns(path, columns)          generic CSV with a header (data/series.py)
    read_ett(path, columns=None)             {column: [T]}            ETTh1.csv / ETTh2.csv
    read_m4(train_csv, test_csv=None)        [M4Series(id, values, test)]
    read_wfdb(record)                        EcgRecord (signals [T, C], fs, beat annotations)
    read_accelerometer(path)                 Accelerometer (xyz [T, 3], labels [T])
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np

from specdifftree.data.series import parse_cell, read_csv_columns
from specdifftree.errors import SDTError

MIN_POINTS = 4  # one encoder patch (EncoderConfig.patch): the shortest series the prior can read
ETT_COLUMNS = ("date", "HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
# chest accelerometer labels (shared/data/har_chest_acc README); 0 is undocumented
ACCEL_LABELS = {1: "working at computer", 2: "standing up, walking, going up/down stairs", 3: "standing",
                4: "walking", 5: "going up/down stairs", 6: "walking and talking", 7: "talking while standing"}


# --------------------------------------------------------------------------- ETT


def read_ett(path: str | Path, columns: Optional[Sequence[str]] = None) -> dict[str, np.ndarray]:
    """Numeric columns of an ETT file (`date,HUFL,...,OT`): {name: [T] float64}; all seven when
    `columns` is None."""
    path = Path(path)
    if not path.is_file():
        raise SDTError(f"ETT file not found: {path}")
    with path.open(newline="") as f:
        header = [c.strip() for c in next(csv.reader(f), [])]
    if header[:1] != ["date"] or len(header) < 2:
        raise SDTError(f"{path}: row 1: expected the ETT header {','.join(ETT_COLUMNS)}, got {','.join(header)}")
    return read_csv_columns(path, list(columns) if columns is not None else header[1:], min_len=MIN_POINTS)


# --------------------------------------------------------------------------- M4


class M4Series(NamedTuple):
    id: str                         # "H1" ... (column V1)
    values: np.ndarray              # [T] the train row
    test: Optional[np.ndarray]      # [H] the matching test row (it continues `values`), or None


def read_m4(train_csv: str | Path, test_csv: str | Path | None = None) -> list[M4Series]:
    """Series of an M4 wide CSV (header "V1","V2",...; V1 the id, then the values in time order,
    shorter rows ending in empty cells), in file order. With `test_csv`, each series gets the
    values of the test row with the same id (the two files must list the same ids in the same order)."""
    train = _read_m4_rows(Path(train_csv))
    if test_csv is None:
        return [M4Series(sid, values, None) for sid, values, _ in train]
    test = _read_m4_rows(Path(test_csv))
    if len(test) != len(train):
        raise SDTError(f"{test_csv}: {len(test)} series, but {train_csv} has {len(train)}; "
                       "pass the test file that matches the train file")
    out = []
    for (sid, values, _), (tid, future, line) in zip(train, test):
        if tid != sid:
            raise SDTError(f"{test_csv}: row {line}: series '{tid}' where the train file has '{sid}'")
        out.append(M4Series(sid, values, future))
    return out


def _read_m4_rows(path: Path) -> list[tuple[str, np.ndarray, int]]:
    """(id, values [T], file line) per row of one M4 wide CSV."""
    if not path.is_file():
        raise SDTError(f"M4 file not found: {path}")
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or header[0].strip() != "V1" or len(header) < 2:
            raise SDTError(f"{path}: row 1: expected an M4 header \"V1\",\"V2\",... (got {','.join(header or [])[:60]})")
        out = []
        for line, row in enumerate(reader, start=2):
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) > len(header):
                raise SDTError(f"{path}: row {line}: {len(row)} cells, but the header has {len(header)}")
            sid = row[0].strip()
            cells = [c.strip() for c in row[1:]]
            while cells and not cells[-1]:
                cells.pop()
            if not sid:
                raise SDTError(f"{path}: row {line}: the series id (column V1) is empty")
            values = np.array([parse_cell(path, line, f"V{j + 2}", c) for j, c in enumerate(cells)], dtype=np.float64)
            if len(values) < MIN_POINTS:
                raise SDTError(f"{path}: row {line}: series '{sid}' has {len(values)} values; "
                               f"at least {MIN_POINTS} (one patch) are needed")
            out.append((sid, values, line))
    if not out:
        raise SDTError(f"{path}: no series rows below the header")
    return out


# --------------------------------------------------------------------------- WFDB (ECG)


@dataclass
class EcgRecord:
    name: str
    fs: float                        # samples per second of `signals`
    leads: list[str]                 # one name per column of `signals`
    signals: np.ndarray              # [T, C] physical units (mV for ECG leads)
    beat_samples: Optional[np.ndarray] = None  # [K] sample index of each annotation (from .atr)
    beat_symbols: Optional[list[str]] = None   # [K] its MIT code: "N" normal, "A" atrial premature, ...
    units: Optional[list[str]] = None          # one physical unit per lead ("mV", "mmHg"), from the header


def read_wfdb(record: str | Path, annotation: str = "atr") -> EcgRecord:
    """A WFDB record (`record` is the path without extension: `.../100` for 100.hea + 100.dat),
    read with the `wfdb` package (formats 212/16, samples-per-frame averaged to the frame rate,
    skew applied). Beat annotations come from `<record>.<annotation>` when that file exists."""
    import wfdb

    record = Path(record)
    base = record.with_suffix("") if record.suffix in (".hea", ".dat", ".atr") else record
    header = base.with_name(base.name + ".hea")
    if not header.is_file():
        raise SDTError(f"WFDB header not found: {header} (pass the record path without extension)")
    try:
        rec = wfdb.rdrecord(str(base))
    except Exception as e:  # noqa: BLE001 (any wfdb failure is a bad record for the user)
        raise SDTError(f"{header}: cannot read the WFDB record: {error_line(e)}") from None
    signals = np.asarray(rec.p_signal, dtype=np.float64)
    skew = max([k or 0 for k in (rec.skew or [])] + [0])
    signals = signals[: len(signals) - skew]  # a skewed signal has no samples for the last `skew` frames
    if signals.ndim != 2 or len(signals) < MIN_POINTS:
        raise SDTError(f"{header}: the record holds {len(signals)} samples; at least {MIN_POINTS} are needed")
    bad = np.argwhere(~np.isfinite(signals))
    if len(bad):
        t, c = bad[0]
        raise SDTError(f"{header}: sample {t} of signal '{rec.sig_name[c]}' is not a finite number")
    out = EcgRecord(base.name, float(rec.fs), list(rec.sig_name), signals, units=list(rec.units or []) or None)
    if base.with_name(f"{base.name}.{annotation}").is_file():
        try:
            ann = wfdb.rdann(str(base), annotation)
        except Exception as e:  # noqa: BLE001
            raise SDTError(f"{base}.{annotation}: cannot read the annotations: {error_line(e)}") from None
        out.beat_samples, out.beat_symbols = np.asarray(ann.sample, dtype=np.int64), list(ann.symbol)
    return out


# --------------------------------------------------------------------------- chest accelerometer


@dataclass
class Accelerometer:
    path: Path
    xyz: np.ndarray      # [T, 3] raw ADC counts, 52 Hz
    labels: np.ndarray   # [T] int activity label (ACCEL_LABELS; 0 = undocumented)
    fs: float = 52.0


def read_accelerometer(path: str | Path) -> Accelerometer:
    """One participant file of the chest-accelerometer dataset: no header, five columns
    `seq, x, y, z, label`. `seq` is ignored (it loses precision past row 100,000 upstream): the
    row order is the time order."""
    path = Path(path)
    if not path.is_file():
        raise SDTError(f"accelerometer file not found: {path}")
    try:  # fast path; any problem is located by the row-by-row scan, which raises
        data = np.loadtxt(path, delimiter=",", ndmin=2)
        ok = data.shape[1] == 5 and np.isfinite(data).all() and _labels_ok(data[:, 4]).all()
    except ValueError:
        ok = False
    if not ok:
        data = _scan_accelerometer(path)
    if len(data) < MIN_POINTS:
        raise SDTError(f"{path}: {len(data)} rows; at least {MIN_POINTS} are needed")
    return Accelerometer(path, data[:, 1:4], data[:, 4].astype(np.int64))


def _labels_ok(labels: np.ndarray) -> np.ndarray:
    return (labels == np.round(labels)) & (labels >= 0) & (labels <= max(ACCEL_LABELS))


def _scan_accelerometer(path: Path) -> np.ndarray:
    """[T, 5] floats, checked row by row: an SDTError names the first bad row."""
    rows = []
    with path.open(newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) != 5:
                raise SDTError(f"{path}: row {line}: {len(row)} columns; expected 5 (seq, x, y, z, label)")
            rows.append([parse_cell(path, line, name, c) for name, c in zip(("seq", "x", "y", "z", "label"), row)])
            if not _labels_ok(np.array(rows[-1][4:])).all():
                raise SDTError(f"{path}: row {line}: label {rows[-1][4]:g} is not one of 0-{max(ACCEL_LABELS)}")
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


# --------------------------------------------------------------------------- helpers


def error_line(e) -> str:
    """The first line of an exception's message (its type name when empty)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]

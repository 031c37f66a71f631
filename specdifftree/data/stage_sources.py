"""The real series the stage datasets draw from, per split (`data/stages.py`), read from a data
directory in shared/data's layout (ett/, m4/, har_chest_acc/, ecg/) and any CSV files directly in it.

    groups = univariate_groups(root, "train")       # ETT, M4, user CSVs: (name, values, offset) per series
    name, x = draw_window(rng, groups, n)           # n consecutive points of a random series
    har_segments(root, "val")["walking"]            # accelerometer pieces per activity
    ecg_windows(root, "test", n)["premature"]       # ECG windows per rhythm, with their beats

Splits follow `data/splits.py`: ETT, user CSVs and every long recording by time 60/20/20 ->
train/val/test; the accelerometer per activity segment; M4 by series index, val being the last 40%
of the training series' rows.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np

from specdifftree.data.splits import Part, ett_range, m4_is_eval
from specdifftree.data.synthetic import ACTIVITIES, ECG_RHYTHMS
from specdifftree.errors import SDTError

PART: dict[str, Part] = {"train": "prior", "val": "flow", "test": "eval"}
HAR_FS, EEG_FS, ECG_FS = 52.0, 64.0, 48.0  # sampling rates of the stage 3, 4 and 5 series
HAR_LABELS = {1: "sitting", 3: "standing", 4: "walking", 5: "stairs"}  # accelerometer label -> activity


@lru_cache(maxsize=4)
def har_segments(root: Path, split: str) -> dict[str, tuple[tuple[str, np.ndarray, int], ...]]:
    """activity -> (file name, [T, 3], first row) pieces of the chest-accelerometer files: each
    run of one label is cut by time 60/20/20 (data/splits.py), so every activity is in every split."""
    from specdifftree.data.sources import read_accelerometer

    out: dict[str, list] = {a: [] for a in ACTIVITIES}
    for path in sorted((root / "har_chest_acc").glob("*.csv"), key=lambda p: p.name):
        rec = read_accelerometer(path)
        cuts = np.flatnonzero(np.diff(rec.labels)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(rec.labels)]):
            activity = HAR_LABELS.get(int(rec.labels[lo]))
            if activity:
                a, b = ett_range(hi - lo, PART[split])
                out[activity].append((path.name, rec.xyz[lo + a:lo + b], lo + a))
    return {k: tuple(v) for k, v in out.items()}
PREMATURE = set("AaJSVF")  # MIT beat codes of premature beats (atrial, nodal, supraventricular, ventricular, fusion)


@lru_cache(maxsize=4)
def ecg_windows(root: Path, split: str, n: int) -> dict[str, tuple[tuple[str, np.ndarray, np.ndarray], ...]]:
    """rhythm -> (name, lead [n] at ECG_FS, beat positions in that window) of the annotated WFDB
    records in root/ecg, by time 60/20/20. A window is 'premature' when it holds an ectopic beat,
    else its rate from the annotated RR intervals gives normal / fast / slow."""
    from scipy.signal import resample_poly

    from specdifftree.data.sources import read_wfdb

    out: dict[str, list] = {r: [] for r in ECG_RHYTHMS}
    for hea in sorted((root / "ecg").glob("*.hea"), key=lambda p: p.name):
        if not hea.with_suffix(".atr").is_file():
            continue
        rec = read_wfdb(hea.with_suffix(""))
        span = int(round(n * rec.fs / ECG_FS))  # samples of the record per window
        lo, hi = ett_range(len(rec.signals), PART[split])
        keep = [k for k, s in enumerate(rec.beat_symbols) if s.isalpha() or s == "/"]
        beats, symbols = rec.beat_samples[keep], [rec.beat_symbols[k] for k in keep]
        for start in range(lo, hi - span, span // 2):
            inside = (beats >= start) & (beats < start + span)
            if inside.sum() < 2:
                continue
            syms = [s for s, m in zip(symbols, inside) if m]
            rate = 60.0 * rec.fs / np.median(np.diff(beats[inside]))
            rhythm = ("premature" if PREMATURE & set(syms) else
                      "fast" if rate > 100 else "slow" if rate < 60 else "normal")
            lead = resample_poly(rec.signals[start:start + span, 0], int(ECG_FS), int(rec.fs))[:n]
            if len(lead) == n:
                pos = (beats[inside] - start) * ECG_FS / rec.fs
                out[rhythm].append((f"{rec.name}[{start}:{start + span}]", lead, pos))
    return {k: tuple(v) for k, v in out.items()}


@lru_cache(maxsize=8)
def univariate_groups(root: Path, split: str) -> tuple[tuple[tuple[str, np.ndarray, int], ...], ...]:
    """Real univariate series of `split`, one group per dataset (ETT, M4, the user's CSV files),
    each a tuple of (name, values, offset of values[0] in its file row / column):
    - ETT (root/ett/ETTh{1,2}.csv) and every numeric column of root/*.csv: the split's part of
      the time axis (data/splits.py: 60/20/20);
    - M4 (root/m4/Hourly-{train,test}.csv): train = the first 60% of the training series' rows,
      val = their last 40%, test = the held-out series with their test rows appended."""
    from specdifftree.data.series import read_csv_columns
    from specdifftree.data.sources import MIN_POINTS, read_ett, read_m4

    def by_time(name: str, values: np.ndarray) -> tuple[str, np.ndarray, int]:
        lo, hi = ett_range(len(values), PART[split])
        return name, values[lo:hi], lo

    ett = [by_time(f"{path.stem}:{col}", values) for path in (root / "ett" / "ETTh1.csv", root / "ett" / "ETTh2.csv")
           if path.is_file() for col, values in read_ett(path).items()]
    user = [by_time(f"{path.name}:{col}", values) for path in sorted(root.glob("*.csv"))
            for col, values in read_csv_columns(path, min_len=MIN_POINTS).items()]
    m4 = []
    train, test = root / "m4" / "Hourly-train.csv", root / "m4" / "Hourly-test.csv"
    if train.is_file() and test.is_file():
        for i, s in enumerate(read_m4(train, test)):
            cut = ett_range(len(s.values), "prior")[1]
            if split == "test" and m4_is_eval(i):
                m4.append((f"M4:{s.id}", np.concatenate([s.values, s.test]), 0))
            elif split != "test" and not m4_is_eval(i):
                m4.append((f"M4:{s.id}", s.values[:cut], 0) if split == "train" else (f"M4:{s.id}", s.values[cut:], cut))
    return tuple(tuple(g) for g in (ett, m4, user) if g)


def check_data_dir(root: Path) -> None:
    """An SDTError when root is missing or holds none of the sources the builders read."""
    if not root.is_dir():
        raise SDTError(f"data directory not found: {root}")
    known = ("ett", "m4", "har_chest_acc", "ecg")
    if not any((root / k).is_dir() for k in known) and not any(root.glob("*.csv")):
        raise SDTError(f"{root} holds none of {', '.join(k + '/' for k in known)} or *.csv files; "
                       "point the data directory at shared/data or at a folder of CSV series")


def draw_window(rng: np.random.Generator, groups, n: int) -> Optional[tuple[str, np.ndarray]]:
    """("name[start:stop]", n consecutive points) from a random group of (name, values, offset)
    (uniform over groups, so a dataset with many short series does not crowd out one with few
    long ones), a random series in it long enough, and a random start; start/stop count from the
    beginning of the source row / column. None when no series has n points."""
    groups = [g for g in (tuple(s for s in grp if len(s[1]) >= n) for grp in groups) if g]
    if not groups:
        return None
    group = groups[int(rng.integers(len(groups)))]
    name, values, offset = group[int(rng.integers(len(group)))]
    start = int(rng.integers(len(values) - n + 1))
    return f"{name}[{offset + start}:{offset + start + n}]", values[start:start + n].copy()

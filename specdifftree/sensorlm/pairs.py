"""(series window, caption) pairs for training and measuring the two towers.

    spec = PairSpec(har=600, ett=150, m4=150, generated=150)
    pairs = build_pairs(Path("../shared/data"), "train", spec, seed=0)   # Pairs
    pairs.texts[i]            # {variant: caption} of window i (every variant it has)
    pairs.windows[i]          # [C, n] float64
    pairs.labels[i]           # the activity of a chest-accelerometer window, else ""

Sources and splits (train / val / test):
- chest accelerometer (har_chest_acc/N.csv, 52 Hz, axes x, y, z): by participant, HAR_SPLIT
  (participants 1-4 train, 5 validation, 6 test); windows of `window` points that carry one
  documented activity throughout (label 2, a mix of standing up, walking and stairs, is left out),
  at most an equal share per activity and participant; each window's level-3 captions state its
  activity (an Event over the whole window, named by HAR_ACTIVITIES or, for half of the windows,
  by its one word in HAR_WORDS), so the high variants name it;
- ETT (ETTh1, ETTh2, every column) by time and M4 Hourly by series, as data/splits.py (the prior's
  part trains, the curriculum's validation part validates, the evaluation part tests; M4's
  training series split 60 / 40 by time into train / validation);
- generated series (data/synthetic.py), drawn from a seed of their own per split.
ETT, M4 and generated windows are univariate, of a length drawn from WINDOW_LENGTHS, captioned at
the unlabelled variants. Every caption is drawn with its own seed: the same spec and seed give
the same pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from specdifftree.data.captions import Captioned, Event, caption_series
from specdifftree.data.splits import ett_range, m4_is_eval
from specdifftree.errors import SDTError

HAR_SPLIT = {"train": (1, 2, 3, 4), "val": (5,), "test": (6,)}
HAR_FS = 52.0
HAR_ACTIVITIES = {1: "working at computer", 3: "standing", 4: "walking", 5: "going up/down stairs",
                  6: "walking and talking", 7: "talking while standing"}  # label 2 (a mix) left out
# the one-word activity each label is also captioned with (half of the windows): the words a question's
# choices use (sitting, standing, walking, stairs)
HAR_WORDS = {1: "sitting", 3: "standing", 4: "walking", 5: "stairs", 6: "walking", 7: "standing"}
AXES = tuple(f"{a}-axis acceleration" for a in "xyz")
WINDOW_LENGTHS = (96, 192, 256, 512)
SPLIT_PART = {"train": "prior", "val": "flow", "test": "eval"}


@dataclass
class PairSpec:
    """How many windows each source gives per split (val and test take `held_out` of each)."""

    har: int = 600
    ett: int = 150
    m4: int = 150
    generated: int = 150
    held_out: float = 0.3  # val / test counts as a share of the train counts
    window: int = 512  # points of a chest-accelerometer window (a trainer sets its model's window)


@dataclass
class Pairs:
    windows: list = field(default_factory=list)     # [C, n] float64 each
    texts: list = field(default_factory=list)       # {variant: caption} each
    labels: list = field(default_factory=list)      # activity or ""
    sources: list = field(default_factory=list)     # "har:6.csv@1024", "ett:ETTh1.csv:OT@5000", ...

    def __len__(self) -> int:
        return len(self.windows)

    def add(self, window: np.ndarray, captioned: Captioned, seed: int, label: str, source: str) -> None:
        caps = caption_series(captioned, seed)
        self.windows.append(np.atleast_2d(window))
        self.texts.append({v: caps.text(v) for v in caps.available()})
        self.labels.append(label)
        self.sources.append(source)

    def corpus(self) -> list[str]:
        return [t for d in self.texts for t in d.values()]


def build_pairs(root: Path, split: str, spec: PairSpec, seed: int = 0) -> Pairs:
    """The split's pairs from every source under root (shared/data's layout) plus generated series."""
    if split not in HAR_SPLIT:
        raise SDTError(f"unknown split '{split}' (train, val, test)")
    share = 1.0 if split == "train" else spec.held_out
    rng = np.random.default_rng([seed, list(HAR_SPLIT).index(split)])
    out = Pairs()
    har_pairs(out, root, split, int(round(spec.har * share)), spec.window, rng)
    ett_pairs(out, root, split, int(round(spec.ett * share)), rng)
    m4_pairs(out, root, split, int(round(spec.m4 * share)), rng)
    generated_pairs(out, int(round(spec.generated * share)), rng)
    return out


def har_windows(path: Path, window: int, stride: Optional[int] = None) -> list[tuple[int, np.ndarray, int]]:
    """(start, xyz [3, window], label) of every window of one participant's file whose label is
    constant and one of HAR_ACTIVITIES, every `stride` points (default: window)."""
    from specdifftree.data.sources import read_accelerometer

    rec = read_accelerometer(path)
    out = []
    for a in range(0, len(rec.labels) - window + 1, stride or window):
        lab = rec.labels[a:a + window]
        if lab[0] in HAR_ACTIVITIES and (lab == lab[0]).all():
            out.append((a, rec.xyz[a:a + window].T.copy(), int(lab[0])))
    return out


def har_captioned(xyz: np.ndarray, label: Optional[str]) -> Captioned:
    """A chest-accelerometer window [3, n] (x, y, z counts) with its activity over the whole of it."""
    events = [Event(label, 0, xyz.shape[1])] if label else []
    return Captioned.build(dict(zip(AXES, xyz)), {a: "ADC counts" for a in AXES}, HAR_FS, events)


def har_pairs(out: Pairs, root: Path, split: str, n: int, window: int, rng: np.random.Generator) -> None:
    """n windows of the split's participants, an equal share per (participant, activity) where they have it."""
    files = [root / "har_chest_acc" / f"{p}.csv" for p in HAR_SPLIT[split]]
    files = [f for f in files if f.is_file()]
    if n <= 0 or not files:
        return
    pools = []
    for f in files:
        wins = har_windows(f, window, window // 2 if split == "train" else window)
        for lab in HAR_ACTIVITIES:
            pool = [w for w in wins if w[2] == lab]
            if pool:
                pools.append((f.name, pool))
    per = -(-n // len(pools))
    for name, pool in pools:
        for k in rng.permutation(len(pool))[:per]:
            start, xyz, lab = pool[k]
            said = HAR_WORDS[lab] if rng.random() < 0.5 else HAR_ACTIVITIES[lab]
            out.add(xyz, har_captioned(xyz, said), int(rng.integers(2**31)), HAR_ACTIVITIES[lab], f"har:{name}@{start}")


def _univariate(out: Pairs, name: str, x: np.ndarray, rng: np.random.Generator) -> None:
    out.add(x[None], Captioned.build({"the series": x}), int(rng.integers(2**31)), "", name)


def ett_pairs(out: Pairs, root: Path, split: str, n: int, rng: np.random.Generator) -> None:
    from specdifftree.data.sources import read_ett

    files = sorted((root / "ett").glob("ETTh*.csv"))
    if n <= 0 or not files:
        return
    data = {f.name: read_ett(f) for f in files}
    for _ in range(n):
        fname = list(data)[int(rng.integers(len(data)))]
        col = sorted(data[fname])[int(rng.integers(len(data[fname])))]
        x = data[fname][col]
        lo, hi = ett_range(len(x), SPLIT_PART[split])
        length = int(rng.choice(WINDOW_LENGTHS))
        a = int(rng.integers(lo, max(lo + 1, hi - length)))
        _univariate(out, f"ett:{fname}:{col}@{a}", x[a:a + length], rng)


def m4_series(root: Path) -> list[np.ndarray]:
    """The M4 Hourly training series, in file order."""
    import csv

    path = root / "m4" / "Hourly-train.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    return [np.array([float(v) for v in r[1:] if v.strip()]) for r in rows]


def m4_pairs(out: Pairs, root: Path, split: str, n: int, rng: np.random.Generator) -> None:
    series = m4_series(root) if n > 0 else []
    pick = [i for i in range(len(series)) if m4_is_eval(i) == (split == "test")]
    for _ in range(n if pick else 0):
        i = pick[int(rng.integers(len(pick)))]
        x = series[i]
        cut = int(0.6 * len(x))
        lo, hi = (0, cut) if split == "train" else (cut, len(x)) if split == "val" else (0, len(x))
        length = min(int(rng.choice(WINDOW_LENGTHS)), hi - lo)
        a = int(rng.integers(lo, hi - length + 1))
        _univariate(out, f"m4:H{i + 1}@{a}", x[a:a + length], rng)


def generated_pairs(out: Pairs, n: int, rng: np.random.Generator) -> None:
    from specdifftree.data.synthetic import periodic_series, synthetic_series

    for k in range(n):
        length = int(rng.choice(WINDOW_LENGTHS))
        make = synthetic_series if rng.random() < 0.6 else periodic_series
        _univariate(out, f"generated:{k}", make(rng, length), rng)

"""Evaluation windows (and flow-training contexts, and validation windows) from the real datasets,
split by `data/splits.py`.

ETT: the eval part is the last 20% of the file by time. A window's context (the `context_length`
points before `end`) and its target (the `horizon` points from `end`) both lie inside it, and
the `windows` ends are evenly spaced over it, so they never touch what trained the prior (the
first 60%) or the flow network (60-75%). Validation windows ("val", 75-80%) are built the same way.
M4 Hourly: the held-out series (`m4_is_eval`), in file order; context = the last
`context_length` points of the train row, target = the official test row (its 48 values).
Flow training contexts: the first training series (the end of the train row, no target).
Validation windows: the last training series, their train row's last `horizon` points as target
(the prior saw those rows: good for tuning S-ADT's options, not for judging the prior).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from specdifftree.data.splits import Part, ett_range, m4_is_eval
from specdifftree.errors import SDTError
from specdifftree.experiments.config import DatasetSpec
from specdifftree.data.context import Context


@dataclass
class Window:
    """One query: history [L] and, for evaluation windows, the true continuation target [H]."""

    key: str  # "end=15000" (ETT row index one past the context) or the M4 series id
    history: np.ndarray
    target: Optional[np.ndarray]

    def context(self, spec: DatasetSpec) -> Context:
        from specdifftree.data.prompts import forecast_codec

        meta = {"dataset": spec.name, "window": self.key}
        return Context(series=self.history, horizon=spec.horizon, codec=forecast_codec(self.history),
                       target=self.target, meta=meta)


def data_root(root: Optional[str]) -> Path:
    """The data directory: `root` when given, else shared/data beside the checkout or the download cache."""
    from specdifftree.paths import default_data_dir

    path = Path(root).expanduser() if root else default_data_dir()
    if path is None or not path.is_dir():
        where = root or "shared/data beside the checkout, or the download cache"
        raise SDTError(f"data directory not found ({where}); "
                       "run `sdt data download all`, or set data_root in the experiment file")
    return path


def windows(spec: DatasetSpec, root: Path, part: Optional[Part] = None, count: Optional[int] = None) -> list[Window]:
    """`count` (default `spec.windows`) windows of `part` (default `spec.part`); targets are set for
    the eval and val parts. A caption or qa dataset's are text windows (experiments/text_windows.py)."""
    count = spec.windows if count is None else count
    part = spec.part if part is None else part
    if spec.task != "forecast":
        from specdifftree.experiments.text_windows import text_windows

        return text_windows(spec, root, part, count, windows)
    if spec.source == "ett":
        return _ett_windows(spec, root, part, count)
    return _m4_windows(spec, root, part, count)


def _ett_windows(spec: DatasetSpec, root: Path, part: Part, count: int) -> list[Window]:
    from specdifftree.data.download import data_file
    from specdifftree.data.sources import read_ett

    full = read_ett(data_file(Path(spec.file).expanduser(), root), [spec.column])[spec.column]  # [N]
    lo, hi = ett_range(len(full), part)
    first, last = lo + spec.context_length, hi - spec.horizon
    if last < first:
        raise SDTError(f"dataset '{spec.name}': the {part} part ({hi - lo} rows) is shorter than "
                       f"context_length + horizon ({spec.context_length + spec.horizon})")
    ends = np.unique(np.linspace(first, last, count).round().astype(int))
    scored = part in ("eval", "val")
    return [Window(f"end={e}", full[e - spec.context_length:e], full[e:e + spec.horizon] if scored else None)
            for e in ends.tolist()]


def _m4_windows(spec: DatasetSpec, root: Path, part: Part, count: int) -> list[Window]:
    """Eval: the first `count` held-out series, target = their official test rows. val: the last
    `count` training series, target = the end of their train row. Other parts: the first training
    series (the end of each train row), no target."""
    from specdifftree.data.download import data_file
    from specdifftree.data.sources import read_m4

    evaluating = part == "eval"
    test = data_file("m4/Hourly-test.csv", root) if evaluating else None
    series = [s for i, s in enumerate(read_m4(data_file("m4/Hourly-train.csv", root), test))
              if m4_is_eval(i) == evaluating]
    if part == "val":
        series = series[::-1]
    H, L = spec.horizon, spec.context_length
    out: list[Window] = []
    for s in series[:count]:
        if evaluating:
            values, target = s.values, s.test[:H]
        elif part == "val":
            values, target = s.values[:-H], s.values[-H:]
        else:
            values, target = s.values, None
        if len(values) < L or (target is not None and len(target) < H):
            raise SDTError(f"dataset '{spec.name}': M4 series {s.id} is too short for context_length {L} "
                           f"and horizon {H}")
        out.append(Window(s.id, values[-L:], target))
    return out

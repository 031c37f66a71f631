"""Evaluation windows (and flow-training contexts) from the real datasets, split by `data/splits.py`.

ETT: the eval part is the last 20% of the file by time. A window's context (the `context_length`
points before `end`) and its target (the `horizon` points from `end`) both lie inside it, and
the `windows` ends are evenly spaced over it, so they never touch what trained the prior (the
first 60%) or the flow network (the 20% in between).
M4 Hourly: the held-out series (`m4_is_eval`), in file order; context = the last
`context_length` points of the train row, target = the official test row (its 48 values).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from specdifftree.data.splits import Part, ett_range, m4_is_eval
from specdifftree.errors import SDTError
from specdifftree.experiments.config import DatasetSpec
from specdifftree.rewards.base import Context


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
    """The data directory: `root` when given, else $SDT_DATA_DIR or shared/data beside the checkout."""
    from specdifftree.data.sources import default_data_dir

    path = Path(root).expanduser() if root else default_data_dir()
    if path is None or not path.is_dir():
        raise SDTError(f"data directory not found ({root or 'shared/data beside the checkout'}); "
                       "set data_root in the experiment file or SDT_DATA_DIR")
    return path


def windows(spec: DatasetSpec, root: Path, part: Part = "eval", count: Optional[int] = None) -> list[Window]:
    """`count` (default `spec.windows`) windows of `part`; targets are set for the eval part."""
    count = spec.windows if count is None else count
    if spec.source == "ett":
        return _ett_windows(spec, root, part, count)
    return _m4_windows(spec, root, part, count)


def _ett_windows(spec: DatasetSpec, root: Path, part: Part, count: int) -> list[Window]:
    from specdifftree.data.sources import read_ett

    path = Path(spec.file).expanduser()
    full = read_ett(path if path.is_absolute() else root / path, [spec.column])[spec.column]  # [N]
    lo, hi = ett_range(len(full), part)
    first, last = lo + spec.context_length, hi - spec.horizon
    if last < first:
        raise SDTError(f"dataset '{spec.name}': the {part} part ({hi - lo} rows) is shorter than "
                       f"context_length + horizon ({spec.context_length + spec.horizon})")
    ends = np.unique(np.linspace(first, last, count).round().astype(int))
    return [Window(f"end={e}", full[e - spec.context_length:e], full[e:e + spec.horizon]) for e in ends.tolist()]


def _m4_windows(spec: DatasetSpec, root: Path, part: Part, count: int) -> list[Window]:
    """Eval: the first `count` held-out series, target = their official test rows. Other parts:
    the training series (the end of each train row), no target."""
    from specdifftree.data.sources import read_m4

    evaluating = part == "eval"
    test = root / "m4" / "Hourly-test.csv" if evaluating else None
    out: list[Window] = []
    for i, s in enumerate(read_m4(root / "m4" / "Hourly-train.csv", test)):
        if len(out) == count:
            break
        if m4_is_eval(i) != evaluating:
            continue
        if len(s.values) < spec.context_length or (evaluating and len(s.test) < spec.horizon):
            raise SDTError(f"dataset '{spec.name}': M4 series {s.id} is shorter than context_length "
                           f"{spec.context_length} or its test row than horizon {spec.horizon}")
        target = s.test[: spec.horizon] if evaluating else None
        out.append(Window(s.id, s.values[-spec.context_length:], target))
    return out

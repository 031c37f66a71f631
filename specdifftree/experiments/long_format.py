"""A search's forecast in the long format forecasting tools read (statsforecast / utilsforecast):

    unique_id, ds, <method>, <method>-lo-95, <method>-lo-80, <method>-hi-80, <method>-hi-95

one row per forecast step. `<method>` is the median over the well-formed samples (the point forecast
the metrics score); the level-L band is the samples' (50 - L/2)% and (50 + L/2)% quantiles, as
statsforecast names them (lo columns from the widest level in, then hi columns outwards). `ds`
continues the history's timestamps where the series file has a date column (its frequency inferred
from the history's stamps), else the integer row index after the history.

    rows = forecast_rows(samples, context, "dts", levels=[80, 95])
    write_forecast_csv("forecast.csv", samples, context, "dts", levels=[80, 95])

An experiment's cells go into one file, DIR/forecasts.csv (`write_experiment_forecasts`, rebuilt
with results.csv), in statsforecast's cross-validation shape: `unique_id` = "<dataset>/<window>",
`ds`, `y` (the window's true continuation), then each cell's columns under its label (the method,
or "<method>@<budget>/seed<seed>" where its cells differ in budget or seed), ready for utilsforecast's
`evaluate`.
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from specdifftree.data.context import Context
from specdifftree.errors import SDTError
from specdifftree.experiments.metrics import forecast_matrix


def check_levels(levels: Sequence) -> list[float]:
    """Levels in (0, 100), sorted and without repeats; SDTError naming the first bad one. A level
    given as text may hold several, separated by commas or spaces ("80,95", "80 95")."""
    out = set()
    for piece in (p for level in levels for p in str(level).replace(",", " ").split()):
        try:
            level = float(piece)
        except ValueError:
            level = float("nan")
        if not 0 < level < 100:
            raise SDTError(f"--level {piece}: a prediction interval's level must be a number in (0, 100), e.g. 80 or 95")
        out.add(level)
    return sorted(out)


def forecast_rows(samples: list[dict], context: Context, method: str, levels: Sequence[float] = (),
                  unique_id: Optional[str] = None) -> list[dict]:
    """Long-format rows (see the module docstring) of the samples' forecasts. samples: dicts with
    "values" (what `forecast_record` gives); context: the query's, with its horizon and meta."""
    H = context.horizon
    if H is None or context.series is None:
        raise SDTError("a forecast table needs a forecasting query: --series FILE.csv and --horizon H")
    full = forecast_matrix(samples, H)  # [S, H]
    if not len(full):
        raise SDTError(f"none of the {len(samples)} samples holds {H} values: there is no forecast to write")
    levels = check_levels(levels)
    out = {method: np.median(full, axis=0)}
    for level in reversed(levels):
        out[f"{method}-lo-{level:g}"] = np.quantile(full, 0.5 - level / 200, axis=0)
    for level in levels:
        out[f"{method}-hi-{level:g}"] = np.quantile(full, 0.5 + level / 200, axis=0)
    file, column = forecast_source(context)
    uid = unique_id or "_".join(str(p) for p in (Path(file).stem if file else "series", column) if p)
    ds = future_stamps(context, H)
    return [{"unique_id": uid, "ds": ds[t], **{k: float(v[t]) for k, v in out.items()}} for t in range(H)]


def write_forecast_csv(path: str | Path, samples: list[dict], context: Context, method: str,
                       levels: Sequence[float] = (), unique_id: Optional[str] = None) -> Path:
    """`forecast_rows` as a CSV file (header row, then one row per step); returns the path."""
    rows = forecast_rows(samples, context, method, levels, unique_id)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


EXPERIMENT_LEVELS = (80.0, 95.0)


def write_experiment_forecasts(out_dir: str | Path, records: list[dict],
                               levels: Sequence[float] = EXPERIMENT_LEVELS) -> Optional[Path]:
    """DIR/forecasts.csv from the experiment's cell records (see the module docstring); None when no
    window has a forecast to write."""
    import json

    from specdifftree.files import write_text

    out_dir = Path(out_dir)
    experiment = json.loads((out_dir / "experiment.json").read_text())
    specs = {d["name"]: d for d in experiment["datasets"]}
    labels = _cell_labels([r["cell"] for r in records])
    table: dict[tuple, dict] = {}
    columns: list[str] = []
    for record, label in zip(records, labels):
        spec = specs.get(record["cell"]["dataset"], {})
        for window in record["windows"]:
            context = _window_context(window, spec, experiment.get("data_root"))
            try:
                rows = forecast_rows(window["samples"], context, label, levels,
                                     unique_id=f"{record['cell']['dataset']}/{window['window']}")
            except SDTError:  # no well-formed sample in this window: its cells stay empty
                continue
            target = window.get("target") or []
            for t, row in enumerate(rows):
                key = (row["unique_id"], row["ds"])
                table.setdefault(key, {"unique_id": key[0], "ds": key[1],
                                       "y": target[t] if t < len(target) else None}).update(row)
            columns += [c for c in rows[0] if c not in ("unique_id", "ds") and c not in columns]
    if not table:
        return None
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["unique_id", "ds", "y", *columns], lineterminator="\n")
    writer.writeheader()
    writer.writerows(table.values())
    path = out_dir / "forecasts.csv"
    write_text(path, buf.getvalue())
    return path


def _cell_labels(cells: list[dict]) -> list[str]:
    """A column label per cell: its method, or method@budget/seedS where the method's cells differ in
    budget or seed (one method's cells on several datasets share a column)."""
    runs: dict[str, set] = {}
    for c in cells:
        runs.setdefault(c["method"], set()).add((c["budget"], c["seed"]))
    return [c["method"] if len(runs[c["method"]]) == 1 else f"{c['method']}@{c['budget']}/seed{c['seed']}"
            for c in cells]


def _window_context(window: dict, spec: dict, data_root: Optional[str]) -> Context:
    """A window's context as forecast_rows reads it: the history, the horizon, and for an ETT window
    ("end=N") its file and row, so `ds` continues the file's timestamps."""
    history = np.asarray(window["history"], dtype=np.float64)
    horizon = int(spec.get("horizon") or len(window.get("target") or []) or 1)
    meta: dict = {"end": len(history)}
    key = str(window["window"])
    if spec.get("source") == "ett" and key.startswith("end=") and spec.get("file"):
        from specdifftree.data.download import data_file
        from specdifftree.experiments.datasets import data_root as resolve_root

        try:
            meta = {"series_file": str(data_file(Path(spec["file"]).expanduser(), resolve_root(data_root))),
                    "column": spec.get("column"), "end": int(key[4:])}
        except SDTError:  # the data file is gone: integer steps instead of timestamps
            pass
    return Context(series=history, horizon=horizon, meta=meta)


def future_stamps(context: Context, horizon: int) -> list:
    """The `horizon` stamps after the history: timestamps ("YYYY-MM-DD HH:MM:SS") continuing the
    series file's date column at the history's frequency, else integer row indices."""
    file, _ = forecast_source(context)
    L = len(context.series)
    end = context.meta.get("end", L)
    stamps = history_stamps(file, end - L, end) if file else None
    if stamps is None:
        return list(range(end, end + horizon))
    import pandas as pd

    freq = pd.infer_freq(stamps) if len(stamps) >= 3 else None
    if freq is None:
        steps = np.diff(stamps.asi8)
        if len(steps) == 0 or not np.all(steps == steps[0]) or steps[0] <= 0:
            raise SDTError(f"{file}: the history's timestamps are not evenly spaced, so the "
                           "forecast's cannot be inferred")
        freq = pd.Timedelta(int(steps[0]), unit="ns")
    future = pd.date_range(stamps[-1], periods=horizon + 1, freq=freq)[1:]
    return [str(t) for t in future]


def forecast_source(context: Context) -> tuple[Optional[str], Optional[str]]:
    """(series file, column) of the forecast series (the first, where covariates came from other
    series), or Nones for a context made from an array."""
    file, column = (v[0] if isinstance(v, (list, tuple)) else v
                    for v in (context.meta.get("series_file"), context.meta.get("column")))
    return file, column


def history_stamps(path: str | Path, start: int, end: int):
    """The first column of data rows [start, end) of a CSV file with a header, as a pandas
    DatetimeIndex, when every one of those cells reads as a date; else None (no date column)."""
    import pandas as pd

    with Path(path).open(newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    cells = [r[0].strip() for r in rows[1:][start:end]]
    if not cells or any(_is_number(c) for c in cells[:1]):
        return None
    try:
        with warnings.catch_warnings():  # pandas warns when it guesses each cell's format on its own
            warnings.simplefilter("ignore", UserWarning)
            return pd.DatetimeIndex(pd.to_datetime(cells))
    except (ValueError, TypeError):
        return None


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


__all__ = ["check_levels", "forecast_rows", "forecast_source", "future_stamps", "history_stamps", "write_experiment_forecasts",
           "write_forecast_csv"]

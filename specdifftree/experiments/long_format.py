"""A search's forecast in the long format forecasting tools read (statsforecast / utilsforecast):

    unique_id, ds, <method>, <method>-lo-95, <method>-lo-80, <method>-hi-80, <method>-hi-95

one row per forecast step. `<method>` is the median over the well-formed samples (the point forecast
the metrics score); the level-L band is the samples' (50 - L/2)% and (50 + L/2)% quantiles, as
statsforecast names them (lo columns from the widest level in, then hi columns outwards). `ds`
continues the history's timestamps where the series file has a date column (its frequency inferred
from the history's stamps), else the integer row index after the history.

    rows = forecast_rows(samples, context, "dts", levels=[80, 95])
    write_forecast_csv("forecast.csv", samples, context, "dts", levels=[80, 95])
"""

from __future__ import annotations

import csv
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


__all__ = ["check_levels", "forecast_rows", "forecast_source", "future_stamps", "history_stamps", "write_forecast_csv"]

"""The query context: what a prior is conditioned on and what a reward may read besides the text,
and the two ways to make one for a forecast: from a CSV file (`build_context`, what `sdt search
--series` does) or from an array (`context_from_array`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from specdifftree.errors import SDTError


@dataclass
class Context:
    """Everything a reward may need about the query besides the generated text.

    series:  [L] the history the forecast continues (None for non-forecast tasks).
    horizon: how many values the forecast should hold (None: any number).
    codec:   how numbers are written as text (None: plain decimals; see data/codec.py).
    target:  [H] the true continuation, for evaluation metrics only, never for search rewards.
    meta:    anything else (dataset, window index, prompt, ...).
    covariates: further series [L_i] over the same window, described and encoded in the prompt
             after `series` (opentslm: priors, as OpenTSLM's multi-series prompts; others refuse them).
    """

    series: Optional[np.ndarray] = None
    horizon: Optional[int] = None
    codec: Any = None
    target: Optional[np.ndarray] = None
    meta: dict = field(default_factory=dict)
    covariates: list = field(default_factory=list)


def build_context(series, column, horizon: Optional[int],
                  context_length: Optional[int], end: Optional[int] = None) -> Context:
    """The query context from a CSV file: the history (the `context_length` points before index
    `end`), the forecast horizon, the codec numbers are written with, and the true continuation
    where the file has it (for evaluation metrics only).

    Several series (`series` and/or `column` lists: several files with one column each, or one
    file's several columns): the first is forecast, the others become `covariates` over the same
    window."""
    if isinstance(series, (list, tuple)) or isinstance(column, (list, tuple)):
        pairs = _series_pairs(series, column)
        if len(pairs) > 1:
            ctx = build_context(*pairs[0], horizon, context_length, end)
            window = (ctx.meta["end"] - len(ctx.series), ctx.meta["end"])
            ctx.covariates = [_window(f, c, *window) for f, c in pairs[1:]]  # checked as context_from_array does
            ctx.meta.update(series_file=[str(f) for f, _ in pairs], column=[c for _, c in pairs])
            return ctx
        series, column = pairs[0] if pairs else (None, None)
    if horizon is not None and horizon < 1:
        raise SDTError("--horizon must be >= 1")
    if series is None:
        if column is not None or context_length is not None or end is not None:
            raise SDTError("--column, --context-length and --end need --series FILE.csv")
        return Context(horizon=horizon)
    from specdifftree.data.series import read_csv_column

    full = read_csv_column(series, column)
    end = len(full) if end is None else end
    if not 4 <= end <= len(full):
        raise SDTError(f"--end must be in [4, {len(full)}] for {series}")
    if context_length is not None and context_length < 4:
        raise SDTError("--context-length must be at least 4")
    history = full[max(0, end - (context_length or end)):end]
    target = full[end:end + horizon] if horizon else None
    return context_from_array(history, horizon, target if target is not None and len(target) == horizon else None,
                              meta={"series_file": str(series), "column": column, "end": end},
                              name=f"series {series}")


def _series_pairs(series, column) -> list:
    """(file, column) per series: several files (one column, or one each), or one file's columns."""
    files = list(series) if isinstance(series, (list, tuple)) else ([] if series is None else [series])
    columns = list(column) if isinstance(column, (list, tuple)) else [column]
    if not files:
        if any(c is not None for c in columns):
            raise SDTError("--column needs --series FILE.csv")
        return []
    if len(files) == 1:
        return [(files[0], c) for c in columns]
    if len(columns) == 1:
        return [(f, columns[0]) for f in files]
    if len(columns) != len(files):
        raise SDTError(f"{len(files)} --series files and {len(columns)} --column names: "
                       "give one column, or one per file")
    return list(zip(files, columns))


def _window(file, column, start: int, end: int) -> np.ndarray:
    from specdifftree.data.series import check_series, read_csv_column

    full = read_csv_column(file, column)
    if len(full) < end:
        raise SDTError(f"{file}: {len(full)} points, the forecast series' window ends at {end}")
    return check_series(np.asarray(full[start:end], dtype=np.float64), f"series {file}", min_len=4)


def context_from_array(history, horizon: Optional[int] = None, target=None, meta: Optional[dict] = None,
                       name: str = "the history", covariates=()) -> Context:
    """A forecasting context from an array: the history [L] (at least 4 finite values), the horizon,
    the number codec scaled to the history, the true continuation [H] when known, and further
    series over the same window (`covariates`, each [L_i]: opentslm: priors describe them all)."""
    from specdifftree.data.prompts import forecast_codec
    from specdifftree.data.series import check_series

    if horizon is not None and horizon < 1:
        raise SDTError("the horizon must be >= 1")
    x = check_series(np.asarray(history, dtype=np.float64).ravel(), name, min_len=4)
    if target is not None:
        target = np.asarray(target, dtype=np.float64).ravel()
        if horizon is not None and len(target) != horizon:
            raise SDTError(f"the target holds {len(target)} values, the horizon is {horizon}")
    extra = [check_series(np.asarray(c, dtype=np.float64).ravel(), f"covariate {i + 1}", min_len=4)
             for i, c in enumerate(covariates)]
    return Context(series=x, horizon=horizon, codec=forecast_codec(x), target=target, meta=dict(meta or {}),
                   covariates=extra)


__all__ = ["Context", "build_context", "context_from_array"]

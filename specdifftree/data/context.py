"""The query context: what a prior is conditioned on and what a reward may read besides the text,
and the two ways to make one for a forecast: from a CSV file (`build_context`, what `sdt search
--series` does) or from an array (`context_from_array`); for a caption or a question (data/tasks.py),
from files (`task_context`, what `sdt search --task caption|qa` does) or from channels (`text_context`,
or `context_from_array(..., task=...)`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional, Sequence

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
    task:    None for a forecast; a data.tasks.Task for a caption or a question (its channels are
             `series` and `covariates`).
    """

    series: Optional[np.ndarray] = None
    horizon: Optional[int] = None
    codec: Any = None
    target: Optional[np.ndarray] = None
    meta: dict = field(default_factory=dict)
    covariates: list = field(default_factory=list)
    task: Any = None


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
                       name: str = "the history", covariates=(), task: str = "forecast",
                       question: Optional[str] = None, choices=(), names=None, fs: Optional[float] = None,
                       label: Optional[str] = None, max_chars: Optional[int] = None) -> Context:
    """A forecasting context from an array: the history [L] (at least 4 finite values), the horizon,
    the number codec scaled to the history, the true continuation [H] when known, and further
    series over the same window (`covariates`, each [L_i]: opentslm: priors describe them all).

    task "caption" or "qa" (data/tasks.py): the history and covariates are the channels to caption or
    ask about (`names`: theirs, default "the series" for one, else "channel 1", ...; `fs`: their
    sampling rate in Hz), `question` and `choices` (a list or "a,b,c") the question's; `label`, the
    right choice when known, is kept for metrics only; `max_chars`: the caption's or reasoning's cap."""
    if task != "forecast":
        return _text_context(history, horizon, target, meta, covariates, task, question, choices, names, fs, label,
                             max_chars)
    from specdifftree.data.tasks import check_task

    check_task(task, question, choices, max_chars=max_chars)
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


def _text_context(history, horizon, target, meta, covariates, task, question, choices, names, fs, label,
                  max_chars) -> Context:
    from specdifftree.data.tasks import Truth, check_task, make_task, split_choices

    choices = split_choices(choices) if choices else ()
    check_task(task, question, choices, horizon, max_chars)
    if target is not None:
        raise SDTError(f"a target is a forecast's truth; --task {task} keeps its label (label=...)")
    xs = [history, *covariates]
    names = list(names) if names is not None else (["the series"] if len(xs) == 1 else
                                                   [f"channel {i + 1}" for i in range(len(xs))])
    if len(names) != len(xs):
        raise SDTError(f"{len(names)} names for {len(xs)} channels")
    if label is not None and label not in choices:
        raise SDTError(f"the label '{label}' is not one of the choices ({', '.join(choices)})")
    return text_context(dict(zip(names, xs)), make_task(task, question, choices, max_chars), fs, truth=Truth(label),
                        meta=meta)


def text_context(chans: dict, task, fs: Optional[float] = None, units: Optional[dict] = None,
                 truth=None, meta: Optional[dict] = None) -> Context:
    """A caption or qa context from channels {name: [L]} over one window (at least 4 finite values each)."""
    from specdifftree.data.captions.base import clean_name
    from specdifftree.data.series import check_series
    from specdifftree.data.tasks import Truth

    if not chans:
        raise SDTError(f"--task {task.name} needs a series")
    xs = [check_series(np.asarray(x, dtype=np.float64).ravel(), f"channel {name}", min_len=4) for name, x in chans.items()]
    if len({len(x) for x in xs}) > 1:
        raise SDTError(f"the channels have different lengths ({sorted({len(x) for x in xs})})")
    names = tuple(clean_name(str(n)) for n in chans)
    task = replace(task, names=names, units={clean_name(k): v for k, v in (units or {}).items()}, fs=fs,
                   truth=truth or Truth(), memo={})
    return Context(series=xs[0], meta=dict(meta or {}), covariates=xs[1:], task=task)


def task_context(task, series, column, context_length: Optional[int], end: Optional[int], fs: Optional[float] = None,
                 label_column: Optional[str] = None) -> Context:
    """A text context from files (what `sdt search --task caption|qa` builds): every channel of every
    --series file as `sdt caption` reads it (a chest-accelerometer file: its three axes at 52 Hz), or the
    --column ones (one for all files, or one per file), the `context_length` points before `end`; the
    window's labels as truth. fs, label_column: as for `sdt caption`."""
    from specdifftree.data.captions import load_captioned
    from specdifftree.data.tasks import Truth

    files = list(series) if isinstance(series, (list, tuple)) else ([] if series is None else [series])
    cols = list(column) if isinstance(column, (list, tuple)) else ([] if column is None else [column])
    if not files:
        raise SDTError(f"--task {task.name} needs --series FILE")
    if len(files) > 1 and len(cols) > 1 and len(cols) != len(files):
        raise SDTError(f"{len(files)} --series files and {len(cols)} --column names: give one column, or one per file")
    per_file = [cols] * len(files) if len(files) == 1 or len(cols) <= 1 else [[c] for c in cols]
    loaded = [load_captioned(f, c, fs, label_column) for f, c in zip(files, per_file)]
    length = min(s.length for s in loaded)
    end = length if end is None else end
    if not 4 <= end <= length:
        raise SDTError(f"--end must be in [4, {length}] for {files[0]}")
    if context_length is not None and context_length < 4:
        raise SDTError("--context-length must be at least 4")
    start = max(0, end - (context_length or end))
    chans, units = {}, {}
    for s in loaded:
        for name, x in s.channels.items():
            chans[name] = x[start:end]
            units[name] = s.units.get(name, "")
    if len(chans) == 1:  # one series is named as the curriculum's captions name it
        chans, units = {"the series": next(iter(chans.values()))}, {}
    truth = Truth(_window_label(files[0], start, end, task.choices), _window_events(loaded[0].events, start, end))
    meta = {"series_file": [str(f) for f in files] if len(files) > 1 else str(files[0]), "column": column, "end": end}
    return text_context(chans, task, loaded[0].fs, units, truth, meta)


def _window_label(path, start: int, end: int, choices: Sequence[str]) -> Optional[str]:
    """The choice a chest-accelerometer window's majority label supports (ACCEL_CHOICES), else None."""
    from specdifftree.data.captions.files import is_accelerometer
    from specdifftree.data.sources import read_accelerometer
    from specdifftree.data.tasks import ACCEL_CHOICES

    if not choices or not is_accelerometer(path):
        return None
    labels = read_accelerometer(path).labels[start:end]
    word = ACCEL_CHOICES.get(int(np.bincount(labels).argmax()))
    return next((c for c in choices if word is not None and c.lower() == word), None)


def _window_events(events, start: int, end: int) -> tuple:
    from specdifftree.data.captions import Event

    return tuple(Event(e.label, max(e.start, start) - start, min(e.end, end) - start, e.kind)
                 for e in events if e.end > start and e.start < end)


__all__ = ["Context", "build_context", "context_from_array", "task_context", "text_context"]

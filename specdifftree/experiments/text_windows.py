"""Text-task evaluation windows (caption, qa) and their metrics, for experiment files whose
datasets say `task: caption` or `task: qa` (experiments/config.py).

Windows, split as `data/splits.py` splits the forecasting ones:
    ett  caption: the forecasting windows' contexts (the last 20% of the file by time for eval),
         built as `sdt search --task caption --series FILE --column C --end E` builds them
    m4   caption: the held-out series, the last `context_length` points of their train row
    har  qa or caption: the chest accelerometer by participant (sensorlm's split: 1-4 train, 5
         validation, 6 test): eval windows from participant 6, val from 5, each inside the last 20%
         of one activity run (no text prior was trained on those stretches); flow-train contexts
         from participants 1-4, inside the 60-75% stretch of each run. Windows lie within one
         documented run, so the activity label (the qa truth) is the run's; they are taken in turn
         from each choice's activity, evenly spaced over its stretches.

Per window metrics (`score_window`), on top of the forecast table's cost columns:
    reward, reward_max     mean and best reward of the returned samples
    distinct               distinct sample texts / samples
    fact_accuracy_low|middle|high   mean over samples of the caption's fact accuracy per level
                           against the window's reference captions (data/tasks.py text_metrics)
    accuracy               qa: share of samples whose answer is the label; answered: share with an answer

`text_comparison` turns finished cells into the text table (mean +- standard error over every
seed x window) and its plots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np

from specdifftree.data.context import Context
from specdifftree.errors import SDTError
from specdifftree.experiments.config import DatasetSpec

TEXT_METRICS = ("fact_accuracy_low", "fact_accuracy_middle", "fact_accuracy_high", "accuracy", "answered")
COST_METRICS = ("forward_tokens", "model_calls", "wall_s", "tree_nodes")
HAR_PARTS = {"eval": ("test", "eval"), "val": ("val", "eval"), "flow-train": ("train", "flow-train")}


@dataclass
class TextWindow:
    """One text query: `history` [L] is the first channel (what the record keeps); a window read
    from a file (ett, har) is rebuilt from it as the CLI builds it, with the window's label."""

    key: str
    history: np.ndarray
    file: Optional[Path] = None
    column: Optional[str] = None
    end: Optional[int] = None
    target: None = None

    def context(self, spec: DatasetSpec) -> Context:
        from specdifftree.data.context import task_context, text_context

        task = dataset_task(spec)
        if self.file is None:
            ctx = text_context({"the series": self.history}, task)
        else:
            ctx = task_context(task, str(self.file), self.column, spec.context_length, self.end)
        ctx.meta.update(dataset=spec.name, window=self.key)
        return ctx


def dataset_task(spec: DatasetSpec):
    """The data.tasks.Task of a text dataset."""
    from specdifftree.data.tasks import make_task

    return make_task(spec.task, spec.question, spec.choices or (), spec.max_chars, variant=spec.variant)


def is_text_dataset(spec: DatasetSpec) -> bool:
    return spec.task != "forecast"


def text_windows(spec: DatasetSpec, root: Path, part: str, count: int, forecast_windows) -> list[TextWindow]:
    """`count` windows of `part` ("eval", "val", "flow-train") of a caption or qa dataset; ett and m4
    captions take the contexts of `forecast_windows(spec, root, part, count)` (datasets.windows)."""
    if spec.source == "har":
        return _har_windows(spec, root, part, count)
    from specdifftree.data.download import data_file

    forecast = replace(spec, task="forecast", horizon=1)  # the forecasting windows' contexts, one point of target
    wins = forecast_windows(forecast, root, part, count)
    if spec.source == "m4":
        return [TextWindow(w.key, w.history) for w in wins]
    file = data_file(Path(spec.file).expanduser(), root)
    return [TextWindow(w.key, w.history, file, spec.column, int(w.key[4:])) for w in wins]


def _har_windows(spec: DatasetSpec, root: Path, part: str, count: int) -> list[TextWindow]:
    from specdifftree.data.download import data_file
    from specdifftree.data.splits import ett_range
    from specdifftree.data.tasks import ACCEL_CHOICES
    from specdifftree.sensorlm.pairs import HAR_SPLIT

    if part not in HAR_PARTS:
        raise SDTError(f"dataset '{spec.name}': har windows come from eval, val or flow-train, not {part}")
    split, stretch = HAR_PARTS[part]
    L = spec.context_length
    wanted = [c.lower() for c in dataset_task(spec).choices] if spec.task == "qa" else sorted(set(ACCEL_CHOICES.values()))
    pools: dict[str, list] = {w: [] for w in wanted}
    for p in HAR_SPLIT[split]:
        file = data_file(f"har_chest_acc/{p}.csv", root)
        labels, x = _accelerometer(str(file))
        cuts = np.flatnonzero(np.diff(labels)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(labels)]):
            word = ACCEL_CHOICES.get(int(labels[lo]))
            a, b = ett_range(int(hi - lo), stretch)
            if word in pools and b - a >= L:
                pools[word] += [(file, int(lo + a + s), x) for s in range(0, b - a - L + 1, L)]
    pools = {w: v for w, v in pools.items() if v}
    if not pools:
        raise SDTError(f"dataset '{spec.name}': no {part} window of {L} points in one activity run")
    words = list(pools)
    order = [words[i % len(words)] for i in range(count)]  # the activities in turn
    picks = {w: _spaced(pools[w], order.count(w)) for w in words}
    out = []
    for word in order:
        if picks[word]:
            file, start, x = picks[word].pop(0)
            out.append(TextWindow(f"{file.stem}:{start}", x[start:start + L], file, None, start + L))
    return out


def _spaced(pool: list, n: int) -> list:
    """At most n distinct items evenly spaced over `pool` (the middle of n equal shares)."""
    return [pool[i] for i in sorted(set(((np.arange(n) + 0.5) * len(pool) / max(n, 1)).astype(int).tolist()))]


@lru_cache(maxsize=8)
def _accelerometer(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels [T], x-axis [T]) of a chest-accelerometer file."""
    from specdifftree.data.sources import read_accelerometer

    rec = read_accelerometer(path)
    return rec.labels, rec.xyz[:, 0].astype(np.float64)


# ------------------------------------------------------------------------------- one window's metrics


def score_window(result, context: Context, window, spec: DatasetSpec) -> tuple[list[dict], dict]:
    """(samples as JSON, the window's metrics) of one search: a forecast's (experiments/metrics.py),
    or a caption's / an answer's (module docstring)."""
    from specdifftree.experiments.metrics import forecast_record, window_metrics

    if not is_text_dataset(spec):
        samples, _ = forecast_record(result, context)
        return samples, window_metrics(samples, result.stats(), window.history, window.target, spec.horizon,
                                       spec.season)
    from specdifftree.data.tasks import text_metrics

    samples = [s.to_dict() for s in result.samples]
    per, summary = text_metrics([s["text"] for s in samples], context)
    for s, p in zip(samples, per):
        s.update(p)
    rewards = [s["reward"] for s in samples]
    stats = result.stats()
    m = {"reward": float(np.mean(rewards)) if rewards else math.nan,
         "reward_max": float(np.max(rewards)) if rewards else math.nan,
         "distinct": len({s["text"] for s in samples}) / max(len(samples), 1),
         **{k: stats[k] for k in COST_METRICS}}
    m.update({k: float(v) for k, v in summary.items() if k in TEXT_METRICS and v is not None})
    return samples, m


def window_samples(samples: list[dict]) -> list[dict]:
    """What a cell record keeps of each sample: its values (forecasts) and reward, and a text
    sample's text with its answer or fact accuracy."""
    keep = ("text", "answer", "fact_accuracy")
    return [{"values": s.get("values", []), "reward": s["reward"],
             **({k: s[k] for k in keep if k in s} if "values" not in s else {})} for s in samples]


def metric_keys(spec: DatasetSpec, base: tuple) -> tuple:
    """The per-window metrics averaged into a cell's record: `base`, and a text dataset's own."""
    return tuple(base) + (TEXT_METRICS if is_text_dataset(spec) else ())


def result_columns(base: tuple, rows: list[dict]) -> list[str]:
    """results.csv's columns: `base`, with the text metrics that some row has placed before the
    provenance columns (a forecast table's columns are unchanged)."""
    from specdifftree.experiments.provenance import PROVENANCE_KEYS

    present = [k for k in TEXT_METRICS if any(_finite(r.get(k)) for r in rows)]
    cut = len(base) - len(PROVENANCE_KEYS) if tuple(base[-len(PROVENANCE_KEYS):]) == tuple(PROVENANCE_KEYS) else len(base)
    return [*base[:cut], *present, *base[cut:]]


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def is_text_record(record: dict) -> bool:
    """Whether a cell record comes from a caption or qa dataset."""
    return any(k in record.get("metrics", {}) for k in TEXT_METRICS)


__all__ = ["TEXT_METRICS", "TextWindow", "dataset_task", "is_text_dataset", "is_text_record", "metric_keys",
           "result_columns", "score_window", "text_windows", "window_samples"]

"""Forecast metrics: of one search result (`forecast_record`, what `sdt search --out` records), of
one method's samples on one window (`window_metrics`), and their means over windows and seeds.

For one window with history h [L], true continuation y [H] and the method's S well-formed
sample forecasts x [S, H] (samples that parse to fewer than H numbers count only in
`well_formed`):

    crps         CRPS of the empirical distribution of the S samples at y (rewards.metrics.crps)
    ncrps        crps / mean|y|   (scale-free, comparable across series)
    mase, smape  of the point forecast median_s(x), MASE scaled by the seasonal-naive MAE of h
    spec_w1      mean_s Spec-W1(x_s, h)   (rewards.spectral.spec_w1)
    spec_w1_truth  Spec-W1(y, h): what the true continuation scores, for reference
    diversity    mean over pairs s != s' of mean_t |x_s,t - x_s',t| / std(h); 0 with one sample
    distinct     distinct sample texts / samples
    reward       mean reward of the returned samples (what the search optimised)
    reward_max   best reward among them
plus the search's cost: forward_tokens, model_calls, wall_s, tree_nodes.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from specdifftree.data.context import Context
from specdifftree.search.common import SearchResult

WINDOW_METRICS = ("reward", "reward_max", "crps", "ncrps", "mase", "smape", "spec_w1", "spec_w1_truth",
                  "diversity", "distinct", "well_formed", "forward_tokens", "model_calls", "wall_s", "tree_nodes")


def forecast_record(result: SearchResult, context: Context, season: Optional[int] = None) -> tuple[list[dict], dict]:
    """Samples as JSON with their parsed forecast ("values"), and forecast metrics: Spec-W1 of each
    forecast against the history, and, where the true continuation is known, CRPS / MASE / MSE of
    the samples' median, next to the MASE of the naive forecast (last value repeated) and, with a
    `season`, of the seasonal naive, on the same target. MASE is scaled by the history's
    seasonal-naive MAE at lag `season` (1 without one)."""
    from specdifftree.rewards import crps, mase, mse, spec_w1

    samples = [s.to_dict() for s in result.samples]
    if context.horizon is None or context.series is None:
        return samples, {}
    codec = context.codec
    for d in samples:
        d["values"] = [float(v) for v in codec.values_for(d["text"], context.horizon)]
    full = forecast_matrix(samples, context.horizon)
    metrics: dict = {"well_formed": len(full) / max(len(samples), 1)}
    if len(full):
        metrics["spec_w1"] = float(np.mean([spec_w1(v, context.series) for v in full]))
        if context.target is not None:
            point = np.median(full, axis=0)
            lag = season if season is not None and len(context.series) > season else 1
            metrics.update(crps=crps(full, context.target), mse=mse(point, context.target),
                           mase=mase(point, context.target, context.series, season=lag),
                           **reference_mase(context, lag, season))
    return samples, metrics


def forecast_matrix(samples: list[dict], horizon: int) -> np.ndarray:
    """The well-formed samples' forecasts (those with `horizon` values).  -> [S, H]"""
    return np.array([d["values"] for d in samples if len(d.get("values") or ()) == horizon]).reshape(-1, horizon)


def reference_mase(context: Context, lag: int, season: Optional[int]) -> dict:
    """{"mase_naive": ..., "mase_seasonal_naive": ... (with a season the history exceeds)} on context.target."""
    from specdifftree.rewards import mase
    from specdifftree.search.reference import naive_forecast, seasonal_naive_forecast

    x, H = np.asarray(context.series, dtype=np.float64), int(context.horizon)
    out = {"mase_naive": mase(naive_forecast(x, H).point, context.target, x, season=lag)}
    if season is not None and len(x) > season:
        out["mase_seasonal_naive"] = mase(seasonal_naive_forecast(x, H, season).point, context.target, x, season=lag)
    return out


def diversity(x: np.ndarray, scale: float) -> float:
    """Mean pairwise mean-absolute distance between forecasts x [S, H], over `scale`; 0 for S < 2."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return 0.0
    d = np.abs(x[:, None, :] - x[None, :, :]).mean(axis=-1)  # [S, S]
    return float(d.sum() / (len(x) * (len(x) - 1)) / max(scale, np.finfo(np.float64).eps))


def window_metrics(samples: list[dict], stats: dict, history: np.ndarray, target, horizon: int,
                   season: int) -> dict:
    """Metrics of one window (see the module docstring). samples: dicts with "values", "reward", "text"."""
    from specdifftree.rewards import crps, mase, smape, spec_w1

    rewards = [s["reward"] for s in samples]
    full = forecast_matrix(samples, horizon)
    m: dict = {"reward": float(np.mean(rewards)) if rewards else math.nan,
               "reward_max": float(np.max(rewards)) if rewards else math.nan,
               "well_formed": len(full) / max(len(samples), 1),
               "distinct": len({s["text"] for s in samples}) / max(len(samples), 1),
               **{k: stats[k] for k in ("forward_tokens", "model_calls", "wall_s", "tree_nodes")}}
    if target is not None:
        m["spec_w1_truth"] = spec_w1(target, history)
    if not len(full):
        return m
    m["spec_w1"] = float(np.mean([spec_w1(v, history) for v in full]))
    m["diversity"] = diversity(full, float(np.std(history)))
    if target is not None:
        point = np.median(full, axis=0)
        m.update(crps=crps(full, target), mase=mase(point, target, history, season=season), smape=smape(point, target))
        m["ncrps"] = m["crps"] / max(float(np.mean(np.abs(target))), np.finfo(np.float64).eps)
    return m


def mean_over(rows: list[dict], keys=WINDOW_METRICS) -> dict:
    """Mean of each key over the rows that have a finite value for it (NaN when none has)."""
    out = {}
    for k in keys:
        vals = [r[k] for r in rows if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
        out[k] = float(np.mean(vals)) if vals else math.nan
    return out


def mean_se(values: list[float]) -> tuple[float, float]:
    """(mean, standard error of the mean) over finite values; se is NaN with fewer than two."""
    v = np.array([x for x in values if isinstance(x, (int, float)) and math.isfinite(x)], dtype=np.float64)
    if not len(v):
        return math.nan, math.nan
    se = float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return float(v.mean()), se

"""The caption-consistency reward: does a forecast continue the structure of its history's
level-2 caption (data/captions/)? Defined exactly in S-ADT.md ("caption-consistency"). On a caption
or qa context it scores the text's facts instead (rewards/text.py's caption_score).

With h the history [L], f the first H values the codec reads from the text [n], R = max(h) - min(h)
(1 when 0):

    trend  = clip(-sign * b / s, 0, 1) when a trend of h (find_trends) ends in the last 10% of h,
             with sign its direction, s its rate per point (|change| / length) and b the least-
             squares slope of [h[-1], f[:k]], k = min(n, max(4, the trend's length)); else 0.
             0 when the forecast keeps going or flattens, 1 when it turns back at least as fast.
    period = (1 - corr(f, c)) / 2 with c_t = h[L - P + (t mod P)], P = round(dominant_period(h)),
             when h has a dominant period (data/features.py); else 0. corr = 0 when f or c is constant.
    spike  = min(1, max(0, n_f - ceil(n_h * n / L))): n_f spikes of [h, f] inside f, found with
             h's thresholds (find_spikes(ref=h)); n_h spikes in h. A spike the history's rate of
             spikes does not explain costs 1.
    r      = -(w_trend * trend + w_period * period + w_spike * spike), in [-3, 0] with unit weights;
             `invalid` (-3) when fewer than 4 values parse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from specdifftree.rewards.base import Context, forecast_values, need_series

MIN_VALUES = 4


@dataclass
class CaptionConsistencyReward:
    """Minus the three structural penalties (trend, period, spike) of a forecast; see the module docstring."""

    name: ClassVar[str] = "caption-consistency"
    w_trend: float = 1.0
    w_period: float = 1.0
    w_spike: float = 1.0
    invalid: float = -3.0

    def __call__(self, text: str, context: Context) -> float:
        if context.task is not None:  # a caption (or any text task): its facts against the series'
            from specdifftree.rewards.text import caption_score

            return caption_score(text, context)
        history = need_series(context, self.name, MIN_VALUES)
        values = forecast_values(text, context)
        if len(values) < MIN_VALUES or not np.all(np.isfinite(values)):
            return self.invalid
        p = penalties(history, values)
        return -(self.w_trend * p["trend"] + self.w_period * p["period"] + self.w_spike * p["spike"])


def penalties(history: np.ndarray, forecast: np.ndarray) -> dict[str, float]:
    """{"trend", "period", "spike"} penalties in [0, 1] of forecast [n] after history [L]."""
    h = np.asarray(history, dtype=np.float64)
    f = np.asarray(forecast, dtype=np.float64)
    with np.errstate(all="ignore"):
        return {"trend": _trend(h, f), "period": _period(h, f), "spike": _spike(h, f)}


def _trend(h: np.ndarray, f: np.ndarray) -> float:
    from specdifftree.data.captions import find_trends

    ending = [t for t in find_trends(h) if t.end >= 0.9 * (len(h) - 1)]
    if not ending:
        return 0.0
    t = ending[-1]
    sign = 1.0 if t.direction == "increasing" else -1.0
    rate = abs(t.change) / max(1, t.end - t.start)  # value per raw point
    k = min(len(f), max(MIN_VALUES, t.end - t.start + 1))
    y = np.r_[h[-1], f[:k]]
    slope = float(np.polyfit(np.arange(len(y)), y, 1)[0])
    return float(np.clip(-sign * slope / rate, 0.0, 1.0)) if rate > 0 else 0.0


def _period(h: np.ndarray, f: np.ndarray) -> float:
    from specdifftree.data.features import dominant_period

    p = dominant_period(h)
    if p is None:
        return 0.0
    period = max(2, min(len(h), int(round(p))))
    c = h[len(h) - period + np.arange(len(f)) % period]
    if np.std(f) == 0 or np.std(c) == 0:
        return 0.5
    rho = float(np.corrcoef(f, c)[0, 1])
    return (1.0 - rho) / 2.0 if math.isfinite(rho) else 0.5


def _spike(h: np.ndarray, f: np.ndarray) -> float:
    from specdifftree.data.captions import find_spikes

    n_h = len(find_spikes(h))
    n_f = int(np.sum(find_spikes(np.r_[h, f], ref=h) >= len(h)))
    allowed = math.ceil(n_h * len(f) / len(h))
    return float(min(1, max(0, n_f - allowed)))

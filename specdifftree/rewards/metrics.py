"""Forecast accuracy against the true continuation: for evaluation only, never a search reward.

pred, target: [H]; history: [L]; samples: [S, H]. Shapes must match (ValueError otherwise).
"""

from __future__ import annotations

import numpy as np


def mse(pred, target) -> float:
    """mean((pred - target)**2)."""
    p, t = _pair(pred, target)
    return float(np.mean((p - t) ** 2))


def mae(pred, target) -> float:
    """mean(|pred - target|)."""
    p, t = _pair(pred, target)
    return float(np.mean(np.abs(p - t)))


def mase(pred, target, history, season: int = 1) -> float:
    """MAE scaled by the in-sample MAE of the seasonal naive forecast on `history` [L > season]:
    mae(pred, target) / mean(|history[season:] - history[:-season]|).

    A zero denominator (a history that repeats exactly) is floored at float64 eps, as sktime
    does: the result is 0 for a perfect forecast and very large otherwise.
    """
    h = np.asarray(history, dtype=np.float64).ravel()
    if season < 1 or len(h) <= season:
        raise ValueError(f"MASE needs season >= 1 and a history longer than the season ({len(h)} <= {season})")
    scale = float(np.mean(np.abs(h[season:] - h[:-season])))
    return mae(pred, target) / max(scale, float(np.finfo(np.float64).eps))


def smape(pred, target) -> float:
    """Symmetric MAPE in percent, in [0, 200]: 100 * mean(2|p - t| / (|p| + |t|)), a 0/0 term is 0."""
    p, t = _pair(pred, target)
    num, den = 2.0 * np.abs(p - t), np.abs(p) + np.abs(t)
    terms = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return float(100.0 * np.mean(terms))


def crps(samples, target) -> float:
    """CRPS of the empirical distribution of `samples` [S, H] at `target` [H], averaged over H.

    Energy form per step: E|X - y| - 0.5 E|X - X'|, X, X' independent draws from the S samples
    (all S**2 pairs). E|X - X'| uses the sorted formula (2 / S**2) sum_i (2i - S - 1) x_(i),
    i = 1..S, so the cost is O(S log S) per step. With S = 1 it is the MAE.
    """
    x = np.asarray(samples, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64).ravel()
    if x.ndim != 2 or x.shape[1] != len(t) or x.shape[0] == 0:
        raise ValueError(f"CRPS needs samples [S >= 1, H] and target [H]; got {x.shape} and {t.shape}")
    s = x.shape[0]
    spread_w = (2.0 * np.arange(1, s + 1) - s - 1)[:, None]  # [S, 1]
    e_xx = 2.0 / s**2 * np.sum(spread_w * np.sort(x, axis=0), axis=0)  # [H]
    e_xy = np.mean(np.abs(x - t[None, :]), axis=0)  # [H]
    return float(np.mean(e_xy - 0.5 * e_xx))


def _pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    """pred, target as float64 [H] of one shape (H >= 1)."""
    p = np.asarray(pred, dtype=np.float64).ravel()
    t = np.asarray(target, dtype=np.float64).ravel()
    if p.shape != t.shape or p.size == 0:
        raise ValueError(f"prediction and target must be non-empty and of one length; got {p.size} and {t.size}")
    return p, t

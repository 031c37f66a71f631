"""Level-2 detectors: trends and spikes of one channel (the rules are in the package docstring).

    trends = find_trends(x)         # [Trend(start, end, direction, change)], at most MAX_TRENDS, in time order
    peaks = find_spikes(x)          # indices, most prominent first
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from specdifftree.data.captions.base import MAX_POINTS, MAX_TRENDS, TREND_WINDOWS

@dataclass
class TrendConfig:
    windows: tuple[int, ...] = TREND_WINDOWS
    scale: float = 1.0  # slope threshold = scale * range / 40 per downsampled point
    max_points: int = MAX_POINTS
    top: int = MAX_TRENDS
    gap: int = 6  # spans of one direction this close that keep going join (a noisy ramp's windows are not all steep)
    trim: float = 0.05  # span ends: the last point before the values pass 5% of the rise, the first after they stay 5% below its top
    min_t: float = 5.0  # a span's least-squares slope must be min_t standard errors from 0
    min_change: float = 0.2  # and at least this share of the range


@dataclass
class Trend:
    direction: str  # "increasing" | "decreasing"
    start: int      # first sample (raw index)
    end: int        # last sample (raw index)
    change: float   # total change of the fitted line over the span


def downsample(x: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, int]:
    """(bin means [<= max_points], bin width): NaN ignored; a bin with no finite value is NaN."""
    bin_ = max(1, math.ceil(len(x) / max_points))
    n = math.ceil(len(x) / bin_)
    padded = np.full(n * bin_, np.nan)
    padded[: len(x)] = x
    blocks = padded.reshape(n, bin_)
    counts = np.isfinite(blocks).sum(axis=1)
    sums = np.where(np.isfinite(blocks), blocks, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan), bin_


def find_trends(x: np.ndarray, cfg: TrendConfig = TrendConfig()) -> list[Trend]:
    """Trends of x [T] (see the module docstring), in time order, raw sample indices."""
    x = np.array(x, dtype=np.float64)
    for p in find_spikes(x):  # a spike is not a trend: its points are left out of the fits
        x[max(0, p - 1):p + 2] = np.nan
    d, bin_ = downsample(x, cfg.max_points)
    finite = d[np.isfinite(d)]
    range_ = float(np.ptp(finite)) if len(finite) else 0.0
    if not (range_ > 0 and math.isfinite(range_)):
        return []
    thresh = cfg.scale * range_ / 40
    spans: dict[int, list[list[int]]] = {1: [], -1: []}
    for w in cfg.windows:
        for a in range(0, len(d) - w + 1):
            slope = _slope(d[a:a + w])
            if abs(slope) >= thresh:
                spans[1 if slope > 0 else -1].append([a, a + w - 1])
    found = [r for sign, windows in spans.items() for r in _ramps(d, windows, sign, range_, cfg)]
    kept: list[tuple] = []
    for item in sorted(found, key=lambda f: (-f[0], f[2])):
        if len(kept) < cfg.top and all(item[3] < k[2] or item[2] > k[3] for k in kept):
            kept.append(item)
    n = len(x)
    return [Trend("increasing" if sign > 0 else "decreasing", min(n - 1, a * bin_ + bin_ // 2),
                  min(n - 1, b * bin_ + bin_ // 2), sign * size)
            for size, sign, a, b in sorted(kept, key=lambda k: k[2])]


def _ramps(d: np.ndarray, windows: list[list[int]], sign: int, range_: float,
           cfg: TrendConfig) -> list[tuple[float, int, int, int]]:
    """(|change|, sign, a, b) of the trends of one direction in d [n]: each run of overlapping
    steep windows is cut to its largest rise (fall) and trimmed (`_extent`); neighbours less than
    cfg.gap apart that keep going join; a span is kept when its least-squares change is at least
    cfg.min_change * range and cfg.min_t standard errors."""
    y = sign * _smooth(d)
    spans: list[list[int]] = []
    for a, b in _merge(windows, 0):
        ext = _extent(y, a, b, cfg.trim)
        if ext is None:
            continue
        if spans and ext[0] - spans[-1][1] <= cfg.gap and y[ext[1]] > y[spans[-1][1]] and y[ext[0]] > y[spans[-1][0]]:
            spans[-1][1] = ext[1]
        else:
            spans.append(list(ext))
    out = []
    for a, b in spans:
        slope, t = _fit(d[a:b + 1])
        if slope * sign * (b - a) >= cfg.min_change * range_ and t >= cfg.min_t:
            out.append((abs(slope) * (b - a), sign, a, b))
    return out


def _smooth(d: np.ndarray) -> np.ndarray:
    """A centred moving average of 3 points (NaN ignored; NaN where all three are).  -> [n]"""
    pad = np.r_[np.nan, d, np.nan]
    stack = np.stack([pad[:-2], pad[1:-1], pad[2:]])
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(stack, axis=0)


def _extent(y: np.ndarray, a: int, b: int, frac: float) -> Optional[tuple[int, int]]:
    """The largest rise of y [n] within [a, b] (i0 < i1 maximising y[i1] - y[i0]), its ends moved in
    to the last point before y first passes frac of the rise and the first point after it last stays
    frac below the top; None without a rise."""
    seg = np.where(np.isfinite(y[a:b + 1]), y[a:b + 1], np.nan)
    if np.isnan(seg).all():
        return None
    low = np.fmin.accumulate(np.where(np.isnan(seg), np.inf, seg))
    gain = np.where(np.isnan(seg), -np.inf, seg - low)
    i1 = int(np.argmax(gain))
    if not gain[i1] > 0:
        return None
    i0 = int(np.flatnonzero(seg[: i1 + 1] == low[i1])[0])
    lo, hi = seg[i0], seg[i1]
    with np.errstate(invalid="ignore"):
        up = np.flatnonzero(seg[i0:i1 + 1] > lo + frac * (hi - lo))
        down = np.flatnonzero(seg[i0:i1 + 1] < hi - frac * (hi - lo))
    s0 = i0 + max(0, int(up[0]) - 1) if len(up) else i0
    s1 = i0 + min(i1 - i0, int(down[-1]) + 1) if len(down) else i1
    return (a + s0, a + s1) if s1 > s0 else (a + i0, a + i1)


def _fit(y: np.ndarray) -> tuple[float, float]:
    """(slope, |slope| / its standard error) of the least-squares line (numpy.linalg.lstsq) through
    the finite points of y [w]; (0, 0) with fewer than 3 of them."""
    t = np.flatnonzero(np.isfinite(y))
    if len(t) < 3:
        return 0.0, 0.0
    a = np.stack([t.astype(np.float64), np.ones(len(t))], axis=1)
    coef = np.linalg.lstsq(a, y[t], rcond=None)[0]
    resid = float(np.sum((a @ coef - y[t]) ** 2))
    sxx = float(np.sum((t - t.mean()) ** 2))
    se = math.sqrt(resid / max(1, len(t) - 2) / sxx)
    slope = float(coef[0])
    return slope, (abs(slope) / se if se > 0 else math.inf)


def _slope(y: np.ndarray) -> float:
    """Least-squares slope (numpy.linalg.lstsq) of the finite points of y [w]; NaN with fewer
    than half of them (or 2) finite."""
    t = np.flatnonzero(np.isfinite(y))
    if len(t) < max(2, len(y) // 2):
        return math.nan
    a = np.stack([t.astype(np.float64), np.ones(len(t))], axis=1)
    return float(np.linalg.lstsq(a, y[t], rcond=None)[0][0])


def _merge(windows: list[list[int]], gap: int) -> list[tuple[int, int]]:
    """Spans [a, b] covering the windows, joining those less than `gap` points apart."""
    out: list[list[int]] = []
    for a, b in sorted(windows):
        if out and a <= out[-1][1] + gap:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def find_spikes(x: np.ndarray, ref: Optional[np.ndarray] = None) -> np.ndarray:
    """Sample indices of spikes in x [T] (find_peaks, module docstring), most prominent first; the
    mean and range of the thresholds come from `ref` when given (default x).  -> [K] int"""
    from scipy.signal import find_peaks

    x = np.asarray(x, dtype=np.float64)
    finite = x[np.isfinite(x)] if ref is None else np.asarray(ref, dtype=np.float64)[np.isfinite(ref)]
    if len(finite) < 3 or np.isfinite(x).sum() < 3:
        return np.zeros(0, dtype=np.int64)
    lo, hi = float(np.min(finite)), float(np.max(finite))
    span = hi - lo
    if not (span > 0 and math.isfinite(span)):
        return np.zeros(0, dtype=np.int64)
    y = np.where(np.isfinite(x), x, np.nanmin(x))
    peaks, props = find_peaks(y, height=float(np.mean(finite)) + 0.6 * span, prominence=0.5 * span, distance=5)
    return peaks[np.argsort(-props["prominences"], kind="stable")].astype(np.int64)

"""What a series shows, computed from its values: trend, dominant period, spikes, and a caption
sentence built from them. Used by the backbone corpus (`data/corpus.py`) and the curriculum
stages (`data/stages.py`), so both describe series the same way."""

from __future__ import annotations

from typing import Optional

import numpy as np


def dominant_period(x: np.ndarray) -> Optional[float]:
    """Period (in points) of the largest periodogram peak of the linearly detrended series, or
    None when no frequency holds at least 15% of the power or the period is over half the length."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    t = np.arange(n)
    resid = x - np.polyval(np.polyfit(t, x, 1), t)
    power = np.abs(np.fft.rfft(resid)) ** 2
    power[0] = 0.0
    if power.sum() <= 0:
        return None
    k = int(np.argmax(power))
    if power[k] / power.sum() < 0.15 or k < 2:
        return None
    return n / k


def trend_word(x: np.ndarray) -> str:
    """'up', 'down' or 'flat': the least-squares line's total change against the series std."""
    x = np.asarray(x, dtype=np.float64)
    change = np.polyfit(np.arange(len(x)), x, 1)[0] * (len(x) - 1)
    if abs(change) < 0.5 * (x.std() + 1e-12):
        return "flat"
    return "up" if change > 0 else "down"


def spike_mask(x: np.ndarray, z: float = 4.0) -> np.ndarray:
    """Points further than z standard deviations from the median.  -> [L] bool"""
    x = np.asarray(x, dtype=np.float64)
    return np.abs(x - np.median(x)) / (x.std() + 1e-12) > z


def spike_word(x: np.ndarray) -> str:
    """'none', 'up' or 'down': the direction of the largest spike (see `spike_mask`), if any."""
    x = np.asarray(x, dtype=np.float64)
    mask = spike_mask(x)
    if not mask.any():
        return "none"
    dev = np.where(mask, x - np.median(x), 0.0)
    return "up" if dev[np.argmax(np.abs(dev))] > 0 else "down"


def caption(x: np.ndarray) -> str:
    """One sentence from statistics: trend, dominant period, spikes, range."""
    x = np.asarray(x, dtype=np.float64)
    trend = {"up": "trends upward", "down": "trends downward", "flat": "has no clear trend"}[trend_word(x)]
    period = dominant_period(x)
    cycle = f"repeats about every {period:.0f} points" if period else "shows no clear periodic pattern"
    spikes = ", with a few sharp spikes" if spike_mask(x).sum() >= 1 else ""
    return f"The series {trend} and {cycle}{spikes}; it ranges from {x.min():.4g} to {x.max():.4g}."

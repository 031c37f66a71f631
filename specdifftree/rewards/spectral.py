"""Spectral distances between a forecast and its context, and the spectral reward.

Both series get a power spectral density (PSD) from scipy.signal with fs = 1 (frequencies in
cycles per sample, [0, 0.5]), detrend="constant" and scaling="density", linearly interpolated
onto the common grid `np.linspace(0, 0.5, n_grid)` (np.interp holds the end value beyond the
last computed frequency, which is below 0.5 for odd lengths).

    welch:       Hann window, nperseg = min(len(x), nperseg) with nperseg = 64 by default,
                 noverlap = nperseg // 2 (scipy's default).
    periodogram: boxcar window over the whole series.

The distances compare two series at one resolution: they call `psd` with
nperseg = min(len(x), len(c), nperseg), so a 24-step forecast and a 512-step context are both
seen through 24-sample Welch segments and their leakage matches.

    log_psd_l1(x, c) = integral_0^0.5 |log(S_x + e) - log(S_c + e)| df,  e = eps * mean(S_c)
    spec_w1(x, c)    = integral_0^0.5 |F_x(f) - F_c(f)| df,  F the CDF of S / sum(S) on the grid

(trapezoid rule for the first; for the second, the exact W1 between the two discrete
distributions on the grid points, sum_i |F_x - F_c| * df). The floor `e` is relative to the
context's mean power, so the distance does not change when both series are scaled together;
when the context has no power at all, `e` is eps times the smallest positive normal float.
A PSD with no power (a constant series) counts as uniform in `spec_w1`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from specdifftree.data.context import Context
from specdifftree.rewards.base import finite_or, forecast_values, need_series

PSD_METHODS = ("welch", "periodogram")
MIN_LEN = 4


def psd(x, method: str = "welch", n_grid: int = 64, nperseg: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """PSD of `x` [L] (L >= 4) on the common grid. Returns (f [n_grid], S [n_grid])."""
    from scipy import signal  # here, not at the top: scipy.signal takes half a second to import

    x = np.asarray(x, dtype=np.float64).ravel()
    if len(x) < MIN_LEN:
        raise ValueError(f"a PSD needs at least {MIN_LEN} values, got {len(x)}")
    if method == "welch":
        f, s = signal.welch(x, fs=1.0, nperseg=min(len(x), nperseg), detrend="constant", scaling="density")
    elif method == "periodogram":
        f, s = signal.periodogram(x, fs=1.0, detrend="constant", scaling="density")
    else:
        raise ValueError(f"unknown PSD method {method!r}; known: {', '.join(PSD_METHODS)}")
    grid = np.linspace(0.0, 0.5, n_grid)
    return grid, np.interp(grid, f, s)


def log_psd_l1(x, c, method: str = "welch", n_grid: int = 64, nperseg: int = 64, eps: float = 1e-6) -> float:
    """Integral over [0, 0.5] of |log S_x - log S_c| df, floored as in the module docstring.
    x: [H], c: [L]; 0.0 exactly when x and c are the same series."""
    f, sx, sc = _pair(x, c, method, n_grid, nperseg)
    floor = eps * max(float(np.mean(sc)), np.finfo(np.float64).tiny)
    gap = np.abs(np.log(sx + floor) - np.log(sc + floor))
    return float(np.sum((gap[1:] + gap[:-1]) * np.diff(f)) / 2)  # trapezoid rule


def spec_w1(x, c, method: str = "welch", n_grid: int = 64, nperseg: int = 64) -> float:
    """1-Wasserstein distance between the unit-mass PSDs of x [H] and c [L]; symmetric, >= 0."""
    f, sx, sc = _pair(x, c, method, n_grid, nperseg)
    cdf_gap = np.cumsum(unit_mass(sx)) - np.cumsum(unit_mass(sc))
    return float(np.sum(np.abs(cdf_gap[:-1])) * (f[1] - f[0]))


@dataclass
class SpectralReward:
    """r = -gamma * log_psd_l1(forecast, context series); `invalid` when under 4 values parse.

    The forecast is the first `context.horizon` values that `context.codec` (default
    NumberCodec()) reads from the text. A missing context series is a configuration error.
    """

    name: ClassVar[str] = "spectral"
    gamma: float = 1.0
    method: str = "welch"
    n_grid: int = 64
    invalid: float = -10.0

    def __call__(self, text: str, context: Context) -> float:
        series = need_series(context, self.name, MIN_LEN)
        values = forecast_values(text, context)
        if len(values) < MIN_LEN:
            return self.invalid
        with np.errstate(all="ignore"):
            d = log_psd_l1(values, series, self.method, self.n_grid)
        return finite_or(-self.gamma * d, self.invalid)


def _pair(x, c, method: str, n_grid: int, nperseg: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(f [n_grid], S_x [n_grid], S_c [n_grid]) at the common Welch segment length."""
    nperseg = min(np.size(x), np.size(c), nperseg)
    f, sx = psd(x, method, n_grid, nperseg)
    _, sc = psd(c, method, n_grid, nperseg)
    return f, sx, sc


def unit_mass(s: np.ndarray) -> np.ndarray:
    """s / sum(s) [n]; uniform when s has no power."""
    total = float(np.sum(s))
    return s / total if total > 0 else np.full(len(s), 1.0 / len(s))

"""Reference forecasters: plain forecasts of the numeric history, as search methods.

They read the history `problem.context.series` [L] (never the prior: 0 forward tokens) and
return `cfg.samples` sample forecasts [S, H], each written as text with the context's number
codec, so its reward and every metric are computed exactly as for a forecast the prior wrote.
A sample's `tokens` are empty: no token sequence of the prior produced it.

Each model gives a point forecast f [H] and a predictive standard deviation sd [H]:

    naive           f_h = x_L;                    sd_h = sigma_1 sqrt(h)
    seasonal-naive  f_h = x_{L - m + (h-1) mod m}; sd_h = sigma_m sqrt(floor((h-1)/m) + 1)
    stats:auto-ets, stats:auto-theta
                    statsforecast's AutoETS / AutoTheta (season_length m): f its mean,
                    sd from its 80% prediction interval, (hi - lo) / (2 z_0.9)

with sigma_k the root mean square of the in-sample lag-k differences x_t - x_{t-k} (the
naive models' one-step residuals; Hyndman & Athanasopoulos, FPP3 section 5.5). Samples are
Gaussian paths with these marginals, correlated along h like a random walk:

    path_s = f + sd * W_s,   W_s,h = (z_s,1 + ... + z_s,h) / sqrt(h),   z ~ N(0, 1)

drawn in antithetic pairs (f + d, f - d), plus f itself when S is odd, so that the median of
the samples at every step is the point forecast (up to the codec's rounding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from specdifftree.errors import SDTError
from specdifftree.search.common import Problem, Sample, SearchConfig, SearchResult, Stopwatch

Z_90 = 1.2815515655446004  # standard normal 0.9 quantile: an 80% interval is f +- Z_90 sd


@dataclass
class Forecast:
    """A point forecast and its predictive standard deviation, both [H]."""

    point: np.ndarray
    sd: np.ndarray


def lag_rms(x: np.ndarray, lag: int) -> float:
    """Root mean square of x_t - x_{t-lag} over the history [L > lag]."""
    d = x[lag:] - x[:-lag]
    return float(np.sqrt(np.mean(d**2)))


def naive_forecast(x: np.ndarray, horizon: int) -> Forecast:
    """The last value repeated; a random walk's spread.  x: [L >= 2] -> [H]"""
    h = np.arange(1, horizon + 1)
    return Forecast(np.full(horizon, float(x[-1])), lag_rms(x, 1) * np.sqrt(h))


def seasonal_naive_forecast(x: np.ndarray, horizon: int, season: int) -> Forecast:
    """The last season repeated; a seasonal random walk's spread.  x: [L > season] -> [H]"""
    check_season(x, season, "seasonal-naive", season + 1)  # a season to repeat, and a lag-m residual
    h = np.arange(1, horizon + 1)
    point = x[len(x) - season + (h - 1) % season]
    return Forecast(point.astype(np.float64), lag_rms(x, season) * np.sqrt((h - 1) // season + 1))


def check_season(x: np.ndarray, season: int, method: str, min_len: int) -> None:
    """SDTError unless the history [L] holds at least `min_len` points for this season."""
    if len(x) < min_len:
        raise SDTError(f"{method} with season {season} needs a history of at least {min_len} points, "
                       f"got {len(x)}: use a longer --context-length or a shorter --season")


def stats_forecast(model_name: str, x: np.ndarray, horizon: int, season: int) -> Forecast:
    """statsforecast's AutoETS or AutoTheta fitted to x [L], with season_length `season`."""
    try:
        from statsforecast import models
    except ImportError:
        raise SDTError(f"stats:{model_name} needs statsforecast: pip install 'statsforecast>=2.0,<3'") from None
    if season > 1:
        check_season(x, season, f"stats:{model_name}", 2 * season)  # a seasonal fit needs two seasons
    model = {"auto-ets": models.AutoETS, "auto-theta": models.AutoTheta}[model_name](season_length=season)
    try:
        out = model.forecast(y=x.astype(np.float64), h=horizon, level=[80])
    except Exception as e:  # noqa: BLE001 - statsforecast raises many kinds; the user needs the message
        raise SDTError(f"stats:{model_name} could not fit this history ({type(e).__name__}: {e})") from None
    point = np.asarray(out["mean"], dtype=np.float64)
    sd = (np.asarray(out["hi-80"], dtype=np.float64) - np.asarray(out["lo-80"], dtype=np.float64)) / (2 * Z_90)
    if not (np.all(np.isfinite(point)) and np.all(np.isfinite(sd))):
        raise SDTError(f"stats:{model_name} gave a non-finite forecast for this history")
    return Forecast(point, np.maximum(sd, 0.0))


def sample_paths(fc: Forecast, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` antithetic Gaussian paths around the point forecast (module docstring).  -> [n, H]"""
    H = len(fc.point)
    z = rng.standard_normal((n // 2, H))
    d = fc.sd * np.cumsum(z, axis=1) / np.sqrt(np.arange(1, H + 1))  # [n // 2, H]
    parts = [fc.point + d, fc.point - d] + ([fc.point[None]] if n % 2 else [])
    return np.concatenate(parts, axis=0)


def history(problem: Problem, method: str) -> tuple[np.ndarray, int]:
    """(history x [L], horizon H) of a forecast problem; SDTError when it is not one."""
    ctx = problem.context
    if ctx.series is None or not ctx.horizon or ctx.codec is None:
        raise SDTError(f"{method} forecasts a series: give --series FILE.csv and --horizon H")
    x = np.asarray(ctx.series, dtype=np.float64).ravel()
    if len(x) < 2:
        raise SDTError(f"{method} needs a history of at least 2 points, got {len(x)}")
    return x, int(ctx.horizon)


def run_reference(method: str, forecast: Callable[[np.ndarray, int, SearchConfig], Forecast], problem: Problem,
                  cfg: SearchConfig, rng: np.random.Generator, progress=None) -> SearchResult:
    """`cfg.samples` sample paths of one reference model, as text samples with their rewards."""
    watch = Stopwatch(problem)
    x, H = history(problem, method)
    paths = sample_paths(forecast(x, H, cfg), cfg.samples, rng)
    codec = problem.context.codec
    samples = []
    for values in paths:
        text = codec.encode(values)
        samples.append(Sample([], text, problem.score_text(text)))
    if progress is not None:
        progress(len(samples))
    return watch.result(method, samples)


def need_season(cfg: SearchConfig, method: str) -> int:
    if cfg.season is None:
        raise SDTError(f"{method} needs the series' season: --season M (e.g. 24 for hourly data)")
    return int(cfg.season)


def run_naive(problem: Problem, cfg: SearchConfig, rng: np.random.Generator, progress=None) -> SearchResult:
    return run_reference("naive", lambda x, H, c: naive_forecast(x, H), problem, cfg, rng, progress)


def run_seasonal_naive(problem: Problem, cfg: SearchConfig, rng: np.random.Generator, progress=None) -> SearchResult:
    def forecast(x, H, c):
        return seasonal_naive_forecast(x, H, need_season(c, "seasonal-naive"))

    return run_reference("seasonal-naive", forecast, problem, cfg, rng, progress)


def run_auto_ets(problem: Problem, cfg: SearchConfig, rng: np.random.Generator, progress=None) -> SearchResult:
    return run_reference("stats:auto-ets", lambda x, H, c: stats_forecast("auto-ets", x, H, c.season or 1),
                         problem, cfg, rng, progress)


def run_auto_theta(problem: Problem, cfg: SearchConfig, rng: np.random.Generator, progress=None) -> SearchResult:
    return run_reference("stats:auto-theta", lambda x, H, c: stats_forecast("auto-theta", x, H, c.season or 1),
                         problem, cfg, rng, progress)


__all__ = ["Forecast", "naive_forecast", "seasonal_naive_forecast", "stats_forecast", "sample_paths",
           "run_naive", "run_seasonal_naive", "run_auto_ets", "run_auto_theta", "Z_90"]

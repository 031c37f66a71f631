"""Reference forecasters (naive, seasonal-naive, stats:auto-ets, stats:auto-theta) as search methods:
known answers, the record format, errors, and `sdt search --plot` / the naive MASE in its metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from specdifftree.data.prompts import forecast_codec
from specdifftree.errors import SDTError
from specdifftree.rewards import SpectralReward
from specdifftree.data.context import Context
from specdifftree.experiments.metrics import forecast_record
from specdifftree.prior.builtin import BUILTIN_PROBLEMS
from specdifftree.search.common import Problem, SearchConfig
from specdifftree.search.reference import naive_forecast, sample_paths, seasonal_naive_forecast
from specdifftree.search.registry import METHODS, get_method, methods_where

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ["naive", "seasonal-naive", "stats:auto-ets", "stats:auto-theta"]
PERIOD = 6
PATTERN = np.array([10.0, 14.0, 19.0, 15.0, 11.0, 8.0])  # one season, exactly representable by the codec


def problem_for(history, horizon: int, target=None) -> Problem:
    """A forecast problem on `history`; the prior (a built-in Markov chain) is never called."""
    x = np.asarray(history, dtype=np.float64)
    ctx = Context(series=x, horizon=horizon, codec=forecast_codec(x), target=target)
    return Problem(BUILTIN_PROBLEMS["toy3"]().prior, SpectralReward(), ctx)


def run(method: str, problem: Problem, samples: int = 9, season=None, seed: int = 0):
    cfg = SearchConfig(samples=samples, season=season).validate()
    return get_method(method)(problem, cfg, np.random.default_rng(seed))


def values(result, problem: Problem) -> np.ndarray:
    """[S, H] sample forecasts parsed back from their text, as every metric reads them."""
    samples, _ = forecast_record(result, problem.context)
    return np.array([s["values"] for s in samples])


def periodic(n_seasons: int) -> np.ndarray:
    return np.tile(PATTERN, n_seasons)


@pytest.fixture(scope="module")
def statsforecast():
    return pytest.importorskip("statsforecast")


def test_registered_as_reference_methods():
    assert methods_where(reference=True) == tuple(REFERENCE)
    assert not any(get_method(m).reference for m in ("dts", "greedy", "smc", "sadt"))
    with pytest.raises(SDTError, match="Did you mean 'naive'"):
        get_method("naiv")


@pytest.mark.parametrize("method,season", [("naive", None), ("seasonal-naive", PERIOD)])
def test_constant_series_forecasts_the_constant(method, season):
    p = problem_for(np.full(30, 42.0), horizon=8)
    result = run(method, p, samples=7, season=season)
    np.testing.assert_array_equal(values(result, p), np.full((7, 8), 42.0))


def test_periodic_series_seasonal_naive_continues_the_season():
    x = periodic(5)
    p = problem_for(x, horizon=9, target=np.tile(PATTERN, 2)[:9])
    v = values(run("seasonal-naive", p, samples=5, season=PERIOD), p)
    np.testing.assert_array_equal(v, np.tile(np.tile(PATTERN, 2)[:9], (5, 1)))  # lag-6 residuals are all 0
    naive = values(run("naive", p, samples=5), p)
    np.testing.assert_array_equal(np.median(naive, axis=0), np.full(9, PATTERN[-1]))  # the last value


def test_point_forecasts_by_formula():
    x = np.arange(1.0, 13.0)  # 1..12
    assert naive_forecast(x, 3).point.tolist() == [12.0, 12.0, 12.0]
    np.testing.assert_allclose(naive_forecast(x, 4).sd, np.sqrt([1, 2, 3, 4]))  # sigma_1 = 1 (all steps are +1)
    fc = seasonal_naive_forecast(x, 7, 4)
    assert fc.point.tolist() == [9.0, 10.0, 11.0, 12.0, 9.0, 10.0, 11.0]
    np.testing.assert_allclose(fc.sd, 4 * np.sqrt([1, 1, 1, 1, 2, 2, 2]))  # sigma_4 = 4, sqrt(floor((h-1)/4) + 1)


@pytest.mark.parametrize("n", [1, 2, 15, 16])
def test_samples_are_antithetic_around_the_point(n):
    fc = naive_forecast(np.cumsum(np.random.default_rng(3).normal(size=50)), 24)
    paths = sample_paths(fc, n, np.random.default_rng(0))
    assert paths.shape == (n, 24)
    np.testing.assert_allclose(np.median(paths, axis=0), fc.point, atol=1e-9)
    if n >= 2:
        assert np.all(paths.std(axis=0) > 0)


def test_record_format_and_zero_cost():
    rng = np.random.default_rng(1)
    x = 50 + np.cumsum(rng.normal(size=60))
    p = problem_for(x, horizon=12, target=x[-12:] + 1)
    result = run("naive", p, samples=6)
    assert result.method == "naive" and result.forward_tokens == 0 and result.model_calls == 0
    assert len(result.samples) == 6
    record = result.to_dict()
    assert set(record) == {"method", "samples", "stats"}
    for s, d in zip(result.samples, record["samples"]):
        assert d == {"tokens": [], "text": s.text, "reward": s.reward}
        assert s.text == p.context.codec.encode(p.context.codec.decode(s.text).values)  # written with the codec
        assert s.reward == pytest.approx(SpectralReward()(s.text, p.context))  # scored like any forecast
    samples, metrics = forecast_record(result, p.context)
    assert all(len(d["values"]) == 12 for d in samples)
    assert metrics["well_formed"] == 1.0 and {"crps", "mase", "mase_naive", "spec_w1"} <= set(metrics)
    assert metrics["mase"] == pytest.approx(metrics["mase_naive"], rel=0.02)  # the median is the naive point


def test_same_seed_same_samples():
    p = problem_for(np.sin(np.arange(40) / 3) * 10 + 20, horizon=6)
    a, b = run("naive", p, seed=5), run("naive", p, seed=5)
    assert [s.text for s in a.samples] == [s.text for s in b.samples]


def test_too_short_for_the_season_is_a_clear_error():
    p = problem_for(periodic(1), horizon=4)  # 6 points, season 6: no lag-6 residual
    with pytest.raises(SDTError, match="seasonal-naive with season 6 needs a history of at least 7 points, got 6"):
        run("seasonal-naive", p, season=PERIOD)
    with pytest.raises(SDTError, match="needs the series' season: --season"):
        run("seasonal-naive", p)


def test_needs_a_forecast_problem():
    p = Problem(BUILTIN_PROBLEMS["toy3"]().prior, SpectralReward(), Context())
    with pytest.raises(SDTError, match="give --series FILE.csv and --horizon H"):
        run("naive", p)


def test_bad_season_option():
    with pytest.raises(SDTError, match="--season must be >= 1"):
        SearchConfig(season=0).validate()


# ------------------------------------------------------------------------- statsforecast models


@pytest.mark.parametrize("method", ["stats:auto-ets", "stats:auto-theta"])
def test_stats_constant_series(method, statsforecast):
    p = problem_for(np.full(40, 7.0), horizon=5)
    v = values(run(method, p, samples=4), p)
    np.testing.assert_allclose(v, 7.0, atol=0.01)


@pytest.mark.parametrize("method", ["stats:auto-ets", "stats:auto-theta"])
def test_stats_periodic_series_with_its_season(method, statsforecast):
    x = periodic(8)  # 48 points
    target = np.tile(PATTERN, 2)[:12]
    p = problem_for(x, horizon=12, target=target)
    result = run(method, p, samples=5, season=PERIOD)
    assert result.forward_tokens == 0
    median = np.median(values(result, p), axis=0)
    np.testing.assert_allclose(median, target, atol=0.6)  # within the codec's rounding and the fit's error


@pytest.mark.parametrize("method", ["stats:auto-ets", "stats:auto-theta"])
def test_stats_too_short_for_the_season(method, statsforecast):
    p = problem_for(periodic(1).tolist() + [9.0] * 5, horizon=4)  # 11 points < two seasons of 6
    with pytest.raises(SDTError, match=f"{method} with season 6 needs a history of at least 12 points, got 11"):
        run(method, p, season=PERIOD)


# ------------------------------------------------------------------------------------- the CLI


def _series_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(200)
    x = 30 + 5 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.5, size=len(t))
    path = tmp_path / "s.csv"
    path.write_text("value\n" + "\n".join(f"{v:.3f}" for v in x) + "\n")
    return path


def test_cli_reference_method_plot_and_naive_mase(tmp_path, run_cli):
    csv = _series_csv(tmp_path)
    png, out = tmp_path / "fan.png", tmp_path / "out.json"
    code, text, err = run_cli(["search", "--prior", f"markov:{ROOT / 'examples' / 'digits.json'}", "--series", csv,
                               "--end", 150, "--context-length", 96, "--horizon", 24, "--reward", "spectral",
                               "--method", "seasonal-naive", "--season", 24, "--samples", 8, "--plot", png,
                               "--out", out])
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    metrics_header = text.split("forecast metrics:")[1].splitlines()[1]
    assert metrics_header.index("mase") < metrics_header.index("mase_naive")  # MASE beside the naive's
    record = json.loads(out.read_text())
    assert record["stats"]["forward_tokens"] == 0 and record["config"]["season"] == 24
    m = record["forecast_metrics"]
    assert m["mase"] == pytest.approx(m["mase_seasonal_naive"], rel=0.05) and m["mase"] < m["mase_naive"]


def test_cli_plot_needs_a_series(run_cli):
    code, _, err = run_cli(["search", "--prior", "markov:toy3", "--method", "dts", "--iterations", 5,
                            "--plot", "x.png"])
    assert code == 2 and "--plot draws a forecast" in err

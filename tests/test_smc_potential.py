"""SMC's partial-decode potential on forecasts (issue 14: SMC's forecasts started near zero).

Read raw, a partial forecast favoured short and truncated numbers: at equal length, a particle
in the middle of a number ("500,500,500,5": a 5 where the model writes 500) or one writing
two-digit numbers (it reaches the spectral reward's four values sooner) scored far above one
writing the level's three digits. `Problem.potential` now scores the finished numbers, completed
to the horizon, so prefixes that differ only in those ways score the same.
"""

from __future__ import annotations

import numpy as np
import pytest

from specdifftree.data.codec import NumberCodec
from specdifftree.data.prompts import forecast_codec
from specdifftree.prior.markov import MarkovPrior
from specdifftree.rewards import SpectralReward
from specdifftree.data.context import Context
from specdifftree.search.common import Problem, SearchConfig, completed_forecast
from specdifftree.search.smc import run_smc

DIGITS = list("0123456789,") + ["<eos>"]


def digits_problem(history: np.ndarray, horizon: int = 24) -> Problem:
    """Uniform digits and separators (a Markov prior), the spectral reward, a forecast context."""
    V = len(DIGITS)
    trans = np.full((V, V), 1.0 / V)
    prior = MarkovPrior(DIGITS, V - 1, 4 * horizon, np.full(V, 1.0 / V), trans)
    ctx = Context(series=history, horizon=horizon, codec=forecast_codec(history))
    return Problem(prior, SpectralReward(), ctx)


def history() -> np.ndarray:
    """A level near 4 with daily swings: the codec writes it as three-digit integers around 500 (scale 0.01)."""
    t = np.arange(96)
    return 4.0 + 0.6 * np.sin(2 * np.pi * t / 24) + 0.2 * np.cos(2 * np.pi * t / 7)


def tokens(problem: Problem, text: str) -> list[int]:
    return [problem.prior.vocab.index(c) for c in text]


def test_the_raw_partial_decode_favoured_short_and_truncated_numbers():
    """What the potential was (the reward of the raw text): the bias this issue found."""
    p = digits_problem(history())
    assert p.context.codec.scale == 0.01
    raw = lambda text: p.reward(text, p.context)  # noqa: E731
    # the same 13 tokens: the level's three digits, mid-number, vs a truncated fourth number
    assert raw("500,500,500,5") > raw("500,500,500,500") + 3  # -2.76 vs -6.85
    # the same 12 tokens: three-digit numbers (3 finished) vs two-digit ones (4 finished)
    assert raw("50,50,50,50,") > raw("500,500,500,") + 3  # -6.85 vs -10 (under 4 values: invalid)


def test_the_potential_reads_finished_numbers_completed_to_the_horizon():
    p = digits_problem(history())
    phi = lambda text: p.potential(tokens(p, text))  # noqa: E731
    assert phi("500,500,500,5") == phi("500,500,500,") == phi("500,500,500,500,")  # the unfinished 5 is not read
    assert phi("50,50,50,50,") == pytest.approx(phi("500,500,500,"))  # flat either way: no prize for short numbers
    assert phi("") == pytest.approx(p.reward(p.context.codec.encode(np.full(24, history()[-1])), p.context))
    assert phi("500,480,520,400,") > phi("500,500,500,500,")  # finished numbers still steer


def test_completed_forecast():
    ctx = Context(series=np.array([1.0, 2.0, 3.0]), horizon=5, codec=NumberCodec(precision=0))
    assert completed_forecast("", ctx) == "3,3,3,3,3"
    assert completed_forecast("7,8,9", ctx) == "7,8,8,8,8"  # "9" may still grow
    assert completed_forecast("7,8,9,", ctx) == "7,8,9,9,9"
    assert completed_forecast("1,2,3,4,5,6,", ctx) == "1,2,3,4,5"
    assert NumberCodec(sep=" ").finished("1 2 3") == "1 2 "


@pytest.mark.slow
def test_smc_on_a_forecast_runs_and_is_seeded():
    p = digits_problem(history(), horizon=6)
    cfg = SearchConfig(particles=32, samples=8, lam=1.0).validate()
    a = run_smc(p, cfg, np.random.default_rng(0))
    b = run_smc(digits_problem(history(), horizon=6), cfg, np.random.default_rng(0))
    assert [s.text for s in a.samples] == [s.text for s in b.samples] and len(a.samples) == 8

"""Build a search problem from user-facing specs and run a method on it (what `sdt search` does)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from specdifftree.errors import SDTError
from specdifftree.prior import load_prior
from specdifftree.rewards.base import Context
from specdifftree.search.common import Problem, SearchConfig, SearchResult
from specdifftree.search.registry import METHODS, get_method

TREE_METHODS = ("dts", "dts-star", "mcts")


def build_context(series: Optional[str], column: Optional[str], horizon: Optional[int],
                  context_length: Optional[int]) -> Context:
    """The reward context: the history series (last `context_length` points) and the forecast horizon."""
    if series is None:
        if column is not None or context_length is not None:
            raise SDTError("--column and --context-length need --series FILE.csv")
        return Context(horizon=horizon)
    from specdifftree.data.codec import NumberCodec
    from specdifftree.data.series import check_series, read_csv_column

    x = read_csv_column(series, column)
    if context_length is not None:
        if context_length < 4:
            raise SDTError("--context-length must be at least 4")
        x = x[-context_length:]
    x = check_series(x, f"series {series}", min_len=4)
    return Context(series=x, horizon=horizon, codec=NumberCodec.fit(x), meta={"series_file": str(series)})


def build_problem(prior: str, rewards: list[str], context: Context, budget: Optional[int] = None) -> tuple[Problem, Optional[float]]:
    """(problem, lambda suggested by a built-in problem or None)."""
    from specdifftree.bench.problems import BUILTIN_PROBLEMS

    kind, _, arg = prior.partition(":")
    builtin = BUILTIN_PROBLEMS[arg]() if kind == "markov" and arg in BUILTIN_PROBLEMS else None
    if rewards:
        from specdifftree.rewards import parse_reward

        reward = parse_reward(rewards)
    elif builtin is not None:
        reward = builtin.reward
    else:
        raise SDTError("--reward is required (e.g. --reward spectral, --reward plugin.py:fn)")
    the_prior = builtin.prior if builtin is not None else load_prior(prior)
    return Problem(the_prior, reward, context, budget), (builtin.lam if builtin else None)


def run_search(problem: Problem, method: str, cfg: SearchConfig, show_progress: bool = False) -> SearchResult:
    """Run one method on a fresh problem, seeded by `cfg.seed` (same seed, same output)."""
    fn = get_method(method)
    cfg.validate()
    problem.budget = cfg.budget
    rng = np.random.default_rng(cfg.seed)
    if not show_progress:
        return fn(problem, cfg, rng)
    from tqdm.auto import tqdm

    total = cfg.iterations if method in TREE_METHODS else None
    with tqdm(total=total, desc=method, unit="it" if total else "step", leave=False, disable=None) as bar:
        return fn(problem, cfg, rng, progress=bar.update)


__all__ = ["METHODS", "build_context", "build_problem", "run_search"]

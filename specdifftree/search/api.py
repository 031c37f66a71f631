"""Build a search problem from user-facing specs and run a method on it (what `sdt search` does)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from specdifftree.errors import SDTError
from specdifftree.prior import load_prior
from specdifftree.rewards.base import Context
from specdifftree.search.common import Problem, SearchConfig, SearchResult
from specdifftree.search.registry import METHODS, get_method

TREE_METHODS = ("dts", "dts-star", "mcts", "sadt")  # progress counts cfg.iterations


def build_context(series: Optional[str], column: Optional[str], horizon: Optional[int],
                  context_length: Optional[int], end: Optional[int] = None) -> Context:
    """The query context: the history (the `context_length` points before index `end`), the
    forecast horizon, the codec numbers are written with, and the true continuation where the
    file has it (for evaluation metrics only)."""
    if horizon is not None and horizon < 1:
        raise SDTError("--horizon must be >= 1")
    if series is None:
        if column is not None or context_length is not None or end is not None:
            raise SDTError("--column, --context-length and --end need --series FILE.csv")
        return Context(horizon=horizon)
    from specdifftree.data.prompts import forecast_codec
    from specdifftree.data.series import check_series, read_csv_column

    full = read_csv_column(series, column)
    end = len(full) if end is None else end
    if not 4 <= end <= len(full):
        raise SDTError(f"--end must be in [4, {len(full)}] for {series}")
    if context_length is not None and context_length < 4:
        raise SDTError("--context-length must be at least 4")
    x = check_series(full[max(0, end - (context_length or end)):end], f"series {series}", min_len=4)
    target = full[end:end + horizon] if horizon else None
    meta = {"series_file": str(series), "column": column, "end": end}
    return Context(series=x, horizon=horizon, codec=forecast_codec(x),
                   target=target if target is not None and len(target) == horizon else None, meta=meta)


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
    the_prior = builtin.prior if builtin is not None else load_prior(prior, context)
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


def forecast_record(result: SearchResult, context: Context) -> tuple[list[dict], dict]:
    """Samples as JSON with their parsed forecast ("values"), and forecast metrics: Spec-W1 of each
    forecast against the history, and, where the true continuation is known, CRPS / MASE / MSE."""
    from specdifftree.rewards import crps, mase, mse, spec_w1

    samples = [s.to_dict() for s in result.samples]
    if context.horizon is None or context.series is None:
        return samples, {}
    codec = context.codec
    for d in samples:
        d["values"] = [float(v) for v in codec.values_for(d["text"], context.horizon)]
    full = np.array([d["values"] for d in samples if len(d["values"]) == context.horizon])
    metrics: dict = {"well_formed": len(full) / max(len(samples), 1)}
    if len(full):
        metrics["spec_w1"] = float(np.mean([spec_w1(v, context.series) for v in full]))
        if context.target is not None:
            point = np.median(full, axis=0)
            metrics.update(crps=crps(full, context.target), mse=mse(point, context.target),
                           mase=mase(point, context.target, context.series, season=1))
    return samples, metrics


__all__ = ["METHODS", "build_context", "build_problem", "forecast_record", "run_search"]

"""Decoding baselines (greedy, ancestral sampling) and the helpers the sampling baselines share:
drawing in batches until a budget is spent, and resampling by log-weights."""

from __future__ import annotations

from typing import Callable, TypeVar

import numpy as np

from specdifftree.search.common import Problem, SearchConfig, SearchResult, Stopwatch, ancestral, logsumexp, make_sample

T = TypeVar("T")


def run_greedy(problem: Problem, cfg: SearchConfig, rng: np.random.Generator, progress=None) -> SearchResult:
    """Argmax decoding: one sequence (`cfg.samples` is ignored)."""
    watch = Stopwatch(problem)
    samples = [make_sample(problem, t, lp) for t, lp in ancestral(problem, 1, rng, greedy=True)]
    if progress is not None:
        progress(1)
    return watch.result("greedy", samples)


def run_sample(problem: Problem, cfg: SearchConfig, rng: np.random.Generator, progress=None) -> SearchResult:
    """`cfg.samples` sequences drawn as one batch from the prior warped by temperature / top-k / top-p."""
    watch = Stopwatch(problem)

    def draw(k: int):
        return ancestral(problem, k, rng, cfg.temperature, cfg.top_k, cfg.top_p)

    if problem.budget is None:
        drawn = draw(cfg.samples)
    else:  # at most cfg.samples, fewer when the budget runs out first
        first = max(1, min(cfg.samples, problem.budget // problem.prior.max_len))
        drawn = [x for batch in spend_in_batches(problem, first, draw, limit=cfg.samples) for x in batch]
    if progress is not None:
        progress(len(drawn))
    return watch.result("sample", [make_sample(problem, t, lp) for t, lp in drawn])


def spend_in_batches(problem: Problem, size: int, draw: Callable[[int], T], limit: int | None = None) -> list[T]:
    """Run `draw(size)` once; when `problem.budget` is set, keep running batches while it is not exhausted
    (and, with `limit`, until that many units are drawn).

    Later batches shrink to what the remaining budget pays for at the average cost per unit so far
    (at least one unit), so the overshoot is small and at most one batch. Stops if a full batch costs
    nothing (a prior whose every draw is free could never exhaust the budget).
    """
    first = problem.spent()
    out, units = [draw(size)], size
    while problem.budget is not None and not problem.exhausted() and (limit is None or units < limit):
        before = problem.spent()
        per_unit = max((before - first) / units, 1e-9)
        k = int(min(size, max(1, (problem.budget - before) // per_unit), limit - units if limit else size))
        out.append(draw(k))
        units += k
        if problem.spent() == before and k == size:
            break
    return out


def weighted_draws(log_w: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """`m` i.i.d. indices with probability ~ exp(log_w) (multinomial resampling).  log_w: [K] -> [m] int"""
    p = np.exp(log_w - logsumexp(log_w))
    return rng.choice(len(p), size=m, p=p / p.sum())

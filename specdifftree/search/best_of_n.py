"""Best-of-N: candidates from the prior, either the best by reward or importance-resampled to pi*."""

from __future__ import annotations

import numpy as np

from specdifftree.search.common import Problem, SearchConfig, SearchResult, Stopwatch, make_sample
from specdifftree.search.sampling import ancestral, spend_in_batches, weighted_draws


def draw_candidates(problem: Problem, cfg: SearchConfig, rng: np.random.Generator,
                    progress=None) -> list[tuple[list[int], float]]:
    """Prior samples (temperature 1) in batches of `cfg.n`: one batch, or while `cfg.budget` lasts.

    Returns (tokens without EOS, log p(x|c)) per candidate.
    """

    def batch(k: int) -> list[tuple[list[int], float]]:
        out = ancestral(problem, k, rng)
        if progress is not None:
            progress(k)
        return out

    return [c for b in spend_in_batches(problem, cfg.budget, cfg.n, batch) for c in b]


def run_best_of_n(problem: Problem, cfg: SearchConfig, rng: np.random.Generator, progress=None) -> SearchResult:
    """The `cfg.samples` best distinct candidates by reward, best first (ties: first drawn first)."""
    watch = Stopwatch(problem)
    distinct = {tuple(t): lp for t, lp in draw_candidates(problem, cfg, rng, progress)}
    ranked = sorted(distinct.items(), key=lambda c: -problem.score(c[0]))
    return watch.result("best-of-n", [make_sample(problem, t, lp) for t, lp in ranked[: cfg.samples]])


def run_best_of_n_is(problem: Problem, cfg: SearchConfig, rng: np.random.Generator, progress=None) -> SearchResult:
    """Self-normalised importance sampling from the prior to pi* ~ p exp(lam r):
    `cfg.samples` draws, with replacement, from the candidates with weights ~ exp(lam r)."""
    watch = Stopwatch(problem)
    cands = draw_candidates(problem, cfg, rng, progress)
    log_w = cfg.lam * np.array([problem.score(t) for t, _ in cands])
    picks = weighted_draws(log_w, cfg.samples, rng)
    return watch.result("best-of-n-is", [make_sample(problem, *cands[i]) for i in picks.tolist()])

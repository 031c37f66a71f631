"""Batched ancestral decoding with the one token sampler (`search.sampler`), the decoding baselines
built on it (greedy, sampling), and what the sampling baselines share: drawing in batches until a
budget is spent, and resampling by log-weights."""

from __future__ import annotations

from typing import Callable, Optional, TypeVar

import numpy as np

from specdifftree.search.common import Problem, SearchConfig, SearchResult, Stopwatch, logsumexp, make_sample
from specdifftree.prior.backbones.base import on_host
from specdifftree.search.sampler import sample

T = TypeVar("T")


def ancestral(problem: Problem, n: int, rng: np.random.Generator, temperature: float = 1.0,
              top_k: int = 0, top_p: float = 1.0, greedy: bool = False,
              policy=None) -> list[tuple[list[int], float]]:
    """Draw `n` complete sequences from the (warped) prior as one batch, as batched `generate` would.

    Every live sequence pays one forward token per step; the prompt is prefilled once and shared.
    The rows are read on the host ([B, V] per step), as the policy and the log-prob sums need them.
    `policy(handles [B], prefixes, logp [B, V]) -> log-probs [B, V]` replaces the prior as the
    distribution drawn from (S-ADT's q); it is called before the handles are released.
    Returns (tokens without EOS, log p(x|c) under the unwarped prior) per sequence.
    """
    prior = problem.prior
    root, root_logp = prior.start()
    handles = np.full(n, root, dtype=np.int64)
    logp = np.repeat(on_host(root_logp)[None], n, axis=0)
    tokens: list[list[int]] = [[] for _ in range(n)]
    total = np.zeros(n)
    live = np.arange(n)
    for _ in range(prior.max_len):
        step_logp = logp[live]
        draw_from = step_logp if policy is None else policy(handles[live], [tokens[i] for i in live], step_logp)
        tok = np.argmax(draw_from, axis=-1) if greedy else \
            sample(draw_from, rng.random(len(live)), temperature, top_k, top_p)[0]
        total[live] += step_logp[np.arange(len(live)), tok]
        go = tok != prior.eos_id
        for i, t in zip(live[go], tok[go]):
            tokens[i].append(int(t))
        done_with = np.unique(handles[live])  # every live handle is replaced by a child or finishes
        live = live[go]
        if len(live) == 0 or len(tokens[live[0]]) == prior.max_len:
            prior.release(done_with)
            break
        handles[live], rows = prior.advance(handles[live], tok[go])
        logp[live] = on_host(rows)
        prior.release(done_with)
    return [(t, float(s)) for t, s in zip(tokens, total)]


# ------------------------------------------------------------------ baselines


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

    drawn = draw_within_budget(problem, cfg, draw)
    if progress is not None:
        progress(len(drawn))
    return watch.result("sample", [make_sample(problem, t, lp) for t, lp in drawn])


def draw_within_budget(problem: Problem, cfg: SearchConfig, draw: Callable[[int], list[T]]) -> list[T]:
    """`cfg.samples` draws as one batch; under `cfg.budget`, at most that many, fewer when the budget
    runs out first (batches sized by `spend_in_batches`)."""
    if cfg.budget is None:
        return draw(cfg.samples)
    first = max(1, min(cfg.samples, cfg.budget // problem.prior.max_len))
    return [x for batch in spend_in_batches(problem, cfg.budget, first, draw, limit=cfg.samples) for x in batch]


def spend_in_batches(problem: Problem, budget: Optional[int], size: int, draw: Callable[[int], T],
                     limit: int | None = None) -> list[T]:
    """Run `draw(size)` once; when `budget` is set, keep running batches while it is not exhausted
    (and, with `limit`, until that many units are drawn).

    Later batches shrink to what the remaining budget pays for at the average cost per unit so far
    (at least one unit), so the overshoot is small and at most one batch. Stops if a full batch costs
    nothing (a prior whose every draw is free could never exhaust the budget).
    """
    first = problem.spent()
    out, units = [draw(size)], size
    while budget is not None and not problem.exhausted(budget) and (limit is None or units < limit):
        before = problem.spent()
        per_unit = max((before - first) / units, 1e-9)
        k = int(min(size, max(1, (budget - before) // per_unit), limit - units if limit else size))
        out.append(draw(k))
        units += k
        if problem.spent() == before and k == size:
            break
    return out


def weighted_draws(log_w: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """`m` i.i.d. indices with probability ~ exp(log_w) (multinomial resampling).  log_w: [K] -> [m] int"""
    p = np.exp(log_w - logsumexp(log_w))
    return rng.choice(len(p), size=m, p=p / p.sum())

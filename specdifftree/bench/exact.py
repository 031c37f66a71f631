"""Exact answers on enumerable problems: every sequence, its prior probability, and pi*."""

from __future__ import annotations

from collections import Counter

import numpy as np

from specdifftree.prior.base import Cost, Prior
from specdifftree.search.common import Problem, logsumexp
from specdifftree.prior.backbones.base import on_host

Seq = tuple[int, ...]


def enumerate_sequences(prior: Prior, limit: int = 200_000) -> dict[Seq, float]:
    """Every complete sequence (tokens without EOS) with its log-prob under the prior.

    Walks the prior breadth-first through its own protocol; the work is not charged to `prior.cost`.
    """
    saved = Cost(prior.cost.forward_tokens, prior.cost.model_calls)
    out: dict[Seq, float] = {}
    root, logp0 = prior.start()
    frontier = [((), 0.0, root, on_host(logp0))]
    while frontier:
        nxt_h, nxt_t, nxt_meta = [], [], []
        for seq, lp, h, logp in frontier:
            for a in np.flatnonzero(np.isfinite(logp)).tolist():
                if a == prior.eos_id:
                    out[seq] = lp + logp[a]
                elif len(seq) + 1 == prior.max_len:
                    out[seq + (a,)] = lp + logp[a]
                else:
                    nxt_h.append(h)
                    nxt_t.append(a)
                    nxt_meta.append((seq + (a,), lp + logp[a]))
            if len(out) + len(nxt_meta) > limit:
                raise ValueError(f"more than {limit} sequences: not an enumerable problem")
        if not nxt_meta:
            break
        handles, logps = prior.advance(np.array(nxt_h), np.array(nxt_t))
        frontier = [(s, lp, h, l) for (s, lp), h, l in zip(nxt_meta, handles.tolist(), on_host(logps))]
    prior.cost = saved
    return out


def target(problem: Problem, lam: float) -> tuple[dict[Seq, float], dict[Seq, float]]:
    """(prior distribution, pi* ~ p exp(lam r)) over all sequences, as probabilities."""
    logp = enumerate_sequences(problem.prior)
    seqs = list(logp)
    lp = np.array([logp[s] for s in seqs])
    lt = lp + lam * np.array([problem.score(s) for s in seqs])
    p, t = np.exp(lp - logsumexp(lp)), np.exp(lt - logsumexp(lt))
    return dict(zip(seqs, p)), dict(zip(seqs, t))


def tv(p: dict, q: dict) -> float:
    """Total-variation distance between two distributions given as {outcome: prob}."""
    keys = set(p) | set(q)
    return 0.5 * float(sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys))


def empirical(seqs) -> dict[Seq, float]:
    counts = Counter(tuple(s) for s in seqs)
    n = sum(counts.values())
    return {k: c / n for k, c in counts.items()}


def noise_floor(dist: dict[Seq, float], n: int, rng: np.random.Generator, reps: int = 20) -> tuple[float, float]:
    """Mean and std of TV(empirical of n exact i.i.d. draws, dist): the best any sampler can show."""
    keys = list(dist)
    p = np.array([dist[k] for k in keys])
    p = p / p.sum()
    vals = [0.5 * np.abs(rng.multinomial(n, p) / n - p).sum() for _ in range(reps)]
    return float(np.mean(vals)), float(np.std(vals))

"""Sequential Monte Carlo to pi*(x) ~ p(x|c) exp(lam r(x)), with the prior as proposal.

A particle at prefix s carries the twist phi(s): the reward of the partial decode with
`potential="partial"` (a partial forecast is first completed to the horizon: `Problem.potential`),
the flow network's F_phi(s) with `potential="flow"` (predicted at s's parent from features the
prior already has: no extra forward pass), else 0. Drawing the next
token from the prior multiplies its weight by
exp(lam (phi(s') - phi(s))), and on reaching a terminal x by exp(lam (r(x) - phi(s))): the
potentials telescope, so the weighted terminal particles target pi* exactly. Finished particles
keep their (frozen) weight in the population. When ESS < `ess_threshold` * K the population is
resampled *systematically* and the weights reset to equal, the mean weight moving into log Z_hat.
"""

from __future__ import annotations

import math

import numpy as np

from specdifftree.search.common import Problem, SearchConfig, SearchResult, Stopwatch, logsumexp, make_sample
from specdifftree.search.registry import POTENTIALS, load_potential
from specdifftree.prior.backbones.base import on_host
from specdifftree.search.sampler import sample
from specdifftree.search.sampling import spend_in_batches, weighted_draws


def ess(log_w: np.ndarray) -> float:
    """Effective sample size (sum w)^2 / sum w^2.   log_w: [K] -> scalar"""
    return float(np.exp(2 * logsumexp(log_w) - logsumexp(2 * log_w)))


def systematic(log_w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Systematic resampling: K ancestor indices from one uniform.   log_w: [K] -> [K] int"""
    K = len(log_w)
    cdf = np.cumsum(np.exp(log_w - logsumexp(log_w)))
    cdf[-1] = 1.0
    return np.searchsorted(cdf, (rng.random() + np.arange(K)) / K, side="right")


def twist(problem: Problem, cfg: SearchConfig, tokens: list[int], terminal: bool) -> float:
    """phi(s): the reward at a terminal, else the partial-decode potential (or 0 with potential="none")."""
    if terminal:
        return problem.score(tokens)
    return problem.potential(tokens) if cfg.potential == "partial" else 0.0


def sweep(problem: Problem, root: tuple[int, np.ndarray], K: int, cfg: SearchConfig, rng: np.random.Generator,
          progress=None, flow=None) -> tuple[list[tuple[list[int], float]], np.ndarray]:
    """One SMC run of K particles from the prefilled prompt `root` = (handle, log-probs [V] on the host).

    Every live particle pays one forward token per step (one batched call); resampled duplicates
    share their parent's handle. Returns the terminal particles as (tokens, log p(x|c)) and their
    log-weights [K], each log Z_hat-at-last-resample + current log-weight, so that they sum to
    K * Z_hat (Z_hat: this sweep's unbiased estimate of E_p exp(lam r)).
    """
    prior, lam = problem.prior, cfg.lam
    handles = np.full(K, root[0], dtype=np.int64)  # [K]
    next_logp = np.repeat(root[1][None], K, axis=0)  # [K, V]
    tokens: list[list[int]] = [[] for _ in range(K)]
    seq_logp, phi, log_w = np.zeros(K), np.zeros(K), np.zeros(K)  # [K] each
    live = np.ones(K, dtype=bool)
    log_z = 0.0
    while live.any():
        idx = np.flatnonzero(live)
        tok = sample(next_logp[idx], rng.random(len(idx)))[0]
        if flow is not None:  # F_phi(s.a) at the drawn child (terminal: its reward), read before s grows
            new_phi = flow.evaluate(handles[idx], [tokens[i] for i in idx.tolist()], next_logp[idx])[1][
                np.arange(len(idx)), tok]
        seq_logp[idx] += next_logp[idx, tok]
        for i, t in zip(idx.tolist(), tok.tolist()):
            if t != prior.eos_id:
                tokens[i].append(t)
        ends = (tok == prior.eos_id) | np.array([len(tokens[i]) == prior.max_len for i in idx], dtype=bool)
        if flow is None:
            new_phi = np.array([twist(problem, cfg, tokens[i], e) for i, e in zip(idx.tolist(), ends.tolist())])
        log_w[idx] += lam * (new_phi - phi[idx])
        phi[idx] = new_phi
        live[idx[ends]] = False
        go = idx[~ends]
        dropped = handles[idx]
        if len(go):
            handles[go], rows = prior.advance(handles[go], tok[~ends])
            next_logp[go] = on_host(rows)
        prior.release(np.setdiff1d(dropped, [root[0]]))
        if progress is not None:
            progress(1)
        if live.any() and ess(log_w) < cfg.ess_threshold * K:
            log_z += float(logsumexp(log_w)) - math.log(K)
            anc = systematic(log_w, rng)
            before = handles[live]
            handles, next_logp, seq_logp, phi, live = handles[anc], next_logp[anc], seq_logp[anc], phi[anc], live[anc]
            tokens = [list(tokens[a]) for a in anc.tolist()]
            log_w = np.zeros(K)
            prior.release(np.setdiff1d(before, handles[live]))
    return [(t, float(lp)) for t, lp in zip(tokens, seq_logp)], log_z + log_w


def run_smc(problem: Problem, cfg: SearchConfig, rng: np.random.Generator, progress=None) -> SearchResult:
    """`cfg.samples` draws (multinomial) from the weighted particles of one sweep of `cfg.particles`.

    With `cfg.budget`, independent sweeps run while it lasts (the prompt is prefilled once, for
    all of them); sweep s's particles enter with its K_s Z_hat_s, a valid combined estimator of pi*.
    """
    watch = Stopwatch(problem)
    flow = None
    if cfg.potential in POTENTIALS:  # "flow": F_phi, from amortize/ (the registry names where)
        flow = load_potential(cfg.potential)(problem, cfg)
    handle, root_logp = problem.prior.start()
    root = (handle, on_host(root_logp))
    sweeps = spend_in_batches(problem, cfg.budget, cfg.particles, lambda k: sweep(problem, root, k, cfg, rng, progress, flow))
    problem.prior.release(np.array([root[0]]))
    particles = [p for ps, _ in sweeps for p in ps]
    picks = weighted_draws(np.concatenate([lw for _, lw in sweeps]), cfg.samples, rng)
    return watch.result("smc", [make_sample(problem, *particles[i]) for i in picks.tolist()])

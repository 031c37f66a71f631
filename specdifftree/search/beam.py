"""Beam search on cumulative log p; finished beams are ranked by log p + lam r."""

from __future__ import annotations

import numpy as np

from specdifftree.search.common import Problem, SearchConfig, SearchResult, Stopwatch, make_sample
from specdifftree.prior.backbones.base import on_host


def run_beam(problem: Problem, cfg: SearchConfig, rng: np.random.Generator, progress=None) -> SearchResult:
    """Beam search of width W = `cfg.beam_width`.

    Each step scores the W * V continuations of the live beams by cumulative log p and keeps the
    top W (impossible ones dropped). A kept continuation that ends (EOS, or `max_len` tokens) joins
    the finished pool; the others are advanced together, one forward token each, in one call.
    Stops when W beams have finished or none is live. Returns the top `cfg.samples` finished
    sequences by log p + lam r.
    """
    watch = Stopwatch(problem)
    prior, W = problem.prior, cfg.beam_width
    handle, logp0 = prior.start()
    handles = np.array([handle], dtype=np.int64)  # [B] live beams, B <= W
    next_logp = on_host(logp0)[None]  # [B, V], on the host: every step ranks all B * V continuations
    scores = np.zeros(1)  # [B] cumulative log p
    seqs: list[list[int]] = [[]]
    finished: list[tuple[list[int], float]] = []
    while len(handles) and len(finished) < W:
        cand = (scores[:, None] + next_logp).ravel()  # [B * V]
        top = np.argsort(-cand, kind="stable")[:W]
        top = top[np.isfinite(cand[top])]
        beam, tok = np.divmod(top, prior.vocab_size)
        new = [seqs[b] + ([] if t == prior.eos_id else [t]) for b, t in zip(beam.tolist(), tok.tolist())]
        ends = (tok == prior.eos_id) | np.array([len(s) == prior.max_len for s in new], dtype=bool)
        finished += [(s, float(cand[j])) for s, j, e in zip(new, top.tolist(), ends.tolist()) if e]
        go = ~ends
        dropped = handles
        if go.any():
            handles, rows = prior.advance(handles[beam[go]], tok[go])
            next_logp = on_host(rows)
        else:
            handles = np.zeros(0, dtype=np.int64)
        prior.release(np.unique(dropped))
        scores = cand[top[go]]
        seqs = [s for s, g in zip(new, go.tolist()) if g]
        if progress is not None:
            progress(1)
    prior.release(handles)
    ranked = sorted(finished, key=lambda f: -(f[1] + cfg.lam * problem.score(f[0])))
    return watch.result("beam", [make_sample(problem, s, lp) for s, lp in ranked[: cfg.samples]])

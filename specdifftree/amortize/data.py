"""Training data for the flow network: trajectories with the prior's features at every step.

A `PrefixStore` keeps, per context, the features and log p(.|s) of each prefix it has seen, each
computed once. Buffer trajectories are walked through the prior breadth first (shared prefixes
run once, in batches); on-policy samples record what the sampler computed anyway. `make_batch`
flattens trajectories into the `losses.Batch` the loss reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specdifftree.amortize.buffer import Record
from specdifftree.amortize.flow import Flow, terminal_children
from specdifftree.search.common import Problem
from specdifftree.prior.backbones.base import on_host
from specdifftree.search.sampling import ancestral

CHUNK = 256  # prefixes per batched prior call when walking buffers


class PrefixStore:
    """x [N, D] features and logp [N, V] log p(.|s) of one context's prefixes; `index[prefix]` is the row."""

    def __init__(self):
        self.index: dict[tuple, int] = {}
        self.x = np.zeros((0, 0), np.float32)
        self.logp = np.zeros((0, 0), np.float32)

    def add(self, prefixes, x: np.ndarray, logp: np.ndarray) -> None:
        """Rows for the prefixes not stored yet.  x: [B, D], logp: [B, V]"""
        first = {}
        for i, p in enumerate(prefixes):
            if tuple(p) not in self.index:
                first.setdefault(tuple(p), i)
        new = list(first.values())
        if not new:
            return
        n = len(self.index)
        if n + len(new) > len(self.x):  # grow by doubling
            cap = max(2 * len(self.x), n + len(new), 64)
            self.x = _resized(self.x, cap, x.shape[1])
            self.logp = _resized(self.logp, cap, logp.shape[1])
        self.x[n: n + len(new)] = x[new]
        self.logp[n: n + len(new)] = logp[new]
        for k, i in enumerate(new):
            self.index[tuple(prefixes[i])] = n + k

    def rows(self, prefixes) -> np.ndarray:
        return np.array([self.index[tuple(p)] for p in prefixes], np.int64)


def _resized(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    out = np.zeros((rows, cols), np.float32)
    if len(a):
        out[: len(a)] = a
    return out


def walk_prefixes(problem: Problem, store: PrefixStore, sequences: list[np.ndarray]) -> None:
    """Run the prior once over every state a[:t] (t < len(a)) of the action sequences, breadth first,
    `CHUNK` prefixes per call, storing their features and log-probs; handles are released level by level."""
    prior = problem.prior
    root, logp0 = prior.start()
    logp0 = on_host(logp0)
    store.add([()], prior.features(np.array([root]), [[]]), logp0[None])
    level, depth = {(): root}, 0
    while True:
        kids = sorted({tuple(int(t) for t in s[: depth + 1]) for s in sequences if len(s) > depth + 1})
        nxt = {}
        for i in range(0, len(kids), CHUNK):
            chunk = kids[i: i + CHUNK]
            handles, logp = prior.advance(np.array([level[k[:-1]] for k in chunk]), np.array([k[-1] for k in chunk]))
            logp = on_host(logp)
            store.add(chunk, prior.features(handles, [list(k) for k in chunk]), logp)
            nxt.update(zip(chunk, handles.tolist()))
        prior.release(np.array(list(level.values())))
        if not nxt:
            return
        level, depth = nxt, depth + 1


@dataclass
class Traj:
    """One trajectory of context `ctx`: actions [T] (the last is EOS or the max_len-th token), the
    store rows of s_0 .. s_{T-1}, its terminal children (step, token, reward), r(x), and the tree's
    values v(s_{t+1}) [T] and v(s_0) where known (NaN otherwise)."""

    ctx: int
    store: PrefixStore
    rows: np.ndarray
    actions: np.ndarray
    term: tuple[np.ndarray, np.ndarray, np.ndarray]
    reward: float
    next_value: np.ndarray
    root_value: float = float("nan")


def make_traj(problem: Problem, ctx: int, store: PrefixStore, actions: np.ndarray,
              next_value=None, root_value: float = float("nan")) -> Traj:
    """A trajectory whose prefixes are already in `store`."""
    actions = np.asarray(actions, np.int64)
    prefixes = [actions[:t].tolist() for t in range(len(actions))]
    rows = store.rows(prefixes)
    tokens = [int(a) for a in actions if a != problem.prior.eos_id]
    nv = np.full(len(actions), np.nan) if next_value is None else np.asarray(next_value, np.float64)
    return Traj(ctx, store, rows, actions, terminal_children(problem, prefixes, store.logp[rows]),
                problem.score(tokens), nv, float(root_value))


def buffer_trajectories(problem: Problem, ctx: int, store: PrefixStore, records: list[Record], max_per_context: int,
                        min_visits: int, rng: np.random.Generator) -> list[Traj]:
    """The buffer's trajectories of one context (at most `max_per_context`, the most visited leaves
    first), walked through the prior. Tree values backed by fewer than `min_visits` visits are dropped."""
    items = [(r, i, n) for r in records for i, n in enumerate(r.lengths.tolist())]
    visits = np.array([r.visits[i, n] for r, i, n in items])  # of each leaf
    order = np.lexsort((rng.random(len(items)), -visits))[:max_per_context]
    chosen = [items[k] for k in order.tolist()]
    seqs = [r.actions[i, :n] for r, i, n in chosen]
    walk_prefixes(problem, store, seqs)
    out = []
    for (r, i, n), seq in zip(chosen, seqs):
        values = np.where(r.visits[i, : n + 1] >= min_visits, r.values[i, : n + 1], np.nan)
        out.append(make_traj(problem, ctx, store, seq, values[1:], values[0]))
    return out


def sample_trajectories(problem: Problem, ctx: int, net, lam: float, n: int, rng: np.random.Generator,
                        temperature: float = 1.0) -> list[Traj]:
    """n draws from q (tempered), as trajectories; the sampler's features are kept, not recomputed."""
    store = PrefixStore()
    flow = Flow(net, problem, lam, store=store)
    eos, max_len = problem.prior.eos_id, problem.prior.max_len
    drawn = ancestral(problem, n, rng, temperature=temperature, policy=flow.log_q)
    return [make_traj(problem, ctx, store, tokens + ([eos] if len(tokens) < max_len else [])) for tokens, _ in drawn]


def make_batch(trajs: list[Traj]):
    """Flatten trajectories into a `losses.Batch` of torch tensors (float32)."""
    import torch

    from specdifftree.amortize.losses import Batch

    lens = np.array([len(t.actions) for t in trajs])
    start = np.concatenate([[0], np.cumsum(lens)[:-1]])
    t32 = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
    term = [np.concatenate([t.term[k] + (s if k == 0 else 0) for t, s in zip(trajs, start)]) for k in range(3)]
    return Batch(
        x=t32(np.concatenate([t.store.x[t.rows] for t in trajs])),
        logp=t32(np.concatenate([t.store.logp[t.rows] for t in trajs])),
        actions=torch.as_tensor(np.concatenate([t.actions for t in trajs])),
        traj=torch.as_tensor(np.repeat(np.arange(len(trajs)), lens)),
        term=(torch.as_tensor(term[0].astype(np.int64)), torch.as_tensor(term[1].astype(np.int64)), t32(term[2])),
        root_x=t32(np.stack([t.store.x[t.rows[0]] for t in trajs])),
        reward=t32([t.reward for t in trajs]),
        next_value=t32(np.concatenate([t.next_value for t in trajs])),
        root_value=t32([t.root_value for t in trajs]),
    )

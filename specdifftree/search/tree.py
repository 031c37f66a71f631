"""A search tree over token prefixes, stored as a struct of arrays, and the moves that grow it.

Node 0 is the root (the empty prefix after the prompt); a child's index is always larger
than its parent's. Each node is a distinct prefix: when the prior draws a token that a
node already has as a child, the draw lands on that child (its `draws` grows) instead of
making a duplicate, so no prefix is ever run through the model twice.

Node fields, all [N]:
    parent, token, depth       structure (root: parent -1, token -1, depth 0)
    logp                       log p(token | parent prefix)
    draws                      how many times the parent drew this token (multiplicity)
    n_draws                    how many tokens this node has drawn from p(.|s)
    visits, value              backup statistics (their meaning is the search method's)
    terminal, reward           terminal = EOS or max_len reached; reward set once, when reached
    handle, evaluated          the prior's handle and whether p(.|s) has been computed
    slot                       where `rows` holds the node's next-token log-probs (-1: not held)
kids: per node, {token: child}.

No node field is as wide as the vocabulary: the next-token rows [V] live in `rows`, a `RowPool`
bounded in bytes (on the model's device when the prior gives device rows), so the tree's memory per
node does not grow with V. A row evicted from the pool is recomputed from the parent's handle
when its node draws again (one forward token, counted): draws stay exactly from p(.|s).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from specdifftree.search.common import Problem
from specdifftree.search.rows import RowPool, is_numpy, sample_rows

ROOT = 0
NO_PARENT = -1


class Tree:
    _FIELDS = {
        "parent": np.int64, "token": np.int64, "depth": np.int64, "logp": np.float64,
        "draws": np.int64, "n_draws": np.int64, "visits": np.int64, "value": np.float64,
        "terminal": bool, "reward": np.float64, "handle": np.int64, "evaluated": bool, "slot": np.int64,
    }

    def __init__(self, problem: Problem, capacity: int = 1024, row_bytes: int | None = None):
        self.problem = problem
        prior = problem.prior
        self.eos, self.max_len, self.V = prior.eos_id, prior.max_len, prior.vocab_size
        self.size = 0
        self._capacity = 0
        self._grow(capacity)
        self.kids: list[dict[int, int]] = []
        self.rows = RowPool(row_bytes, pinned=ROOT)  # default: rows.ROW_POOL_BYTES
        self.reloads = 0  # rows recomputed after eviction (each one forward token)
        handle, logp = prior.start_rows()
        root = self._new(NO_PARENT, -1, 0.0)
        self._set_evaluated(np.array([root]), np.array([handle]), logp[None])

    # ------------------------------------------------------------- storage

    def _grow(self, capacity: int) -> None:
        for name, dtype in self._FIELDS.items():
            old = getattr(self, name, np.zeros(0, dtype))
            new = np.zeros(capacity, dtype)
            new[: len(old)] = old
            setattr(self, name, new)
        self._capacity = capacity

    def _new(self, parent: int, token: int, logp: float) -> int:
        if self.size == self._capacity:
            self._grow(2 * self._capacity)
        n = self.size
        self.size += 1
        self.parent[n], self.token[n], self.logp[n] = parent, token, logp
        self.depth[n] = 0 if parent < 0 else self.depth[parent] + 1
        self.terminal[n] = token == self.eos or self.depth[n] >= self.max_len
        self.reward[n] = np.nan
        self.slot[n] = -1
        self.kids.append({})
        if parent >= 0:
            self.kids[parent][token] = n
        return n

    def _set_evaluated(self, nodes: np.ndarray, handles: np.ndarray, logp) -> None:
        """nodes [B] get handles [B] and their rows: logp [B, V] (numpy, or torch on the model's device)."""
        self.handle[nodes] = handles
        self.rows.put(nodes, self._channels(nodes, handles, logp), self.slot)
        self.evaluated[nodes] = True

    def _channels(self, nodes: np.ndarray, handles: np.ndarray, logp) -> list:
        """What the pool holds per node, each [B, V]; draws come from the first. Host rows are kept in
        float32 (device rows in the dtype the prior gives)."""
        return [np.asarray(logp, np.float32) if is_numpy(logp) else logp]

    # ------------------------------------------------------------- reading

    def children(self, n: int) -> np.ndarray:
        """[K] child ids of node n, in creation order."""
        return np.fromiter(self.kids[n].values(), dtype=np.int64, count=len(self.kids[n]))

    def tokens(self, n: int) -> list[int]:
        """Tokens from the root to n, EOS excluded."""
        out = []
        while n > ROOT:
            out.append(int(self.token[n]))
            n = int(self.parent[n])
        out.reverse()
        return [t for t in out if t != self.eos]

    def log_weight(self, nodes: np.ndarray, rule: str) -> np.ndarray:
        """log of each child's weight at its parent: log p(a|s) ("prior") or log multiplicity ("count")."""
        return self.logp[nodes] if rule == "prior" else np.log(self.draws[nodes])

    def leaf_reward(self, n: int) -> float:
        if np.isnan(self.reward[n]):
            self.reward[n] = self.problem.score(self.tokens(n))
        return float(self.reward[n])

    # ------------------------------------------------------------- growing

    def can_widen(self, n: int, c: float, alpha: float) -> bool:
        """Progressive widening: a node may make C * max(N, 1)^alpha draws from the prior."""
        return self.n_draws[n] < c * max(int(self.visits[n]), 1) ** alpha

    def draw(self, nodes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw one token from p(.|s) at each node and move to that child, adding it if new.

        nodes: [B] evaluated, non-terminal (repeats allowed). Returns [B] children; new ones are
        not evaluated yet (see `evaluate`). Draws that land on an existing child raise its `draws`.
        """
        self.evaluate(nodes)  # rows evicted from the pool are recomputed
        toks, logps = sample_rows(self.rows.take(self.slot[nodes]), rng.random(len(nodes)))
        out = np.empty(len(nodes), dtype=np.int64)
        for i, (n, t, lp) in enumerate(zip(nodes.tolist(), toks.tolist(), logps.tolist())):
            child = self.kids[n].get(t)
            if child is None:
                child = self._new(n, t, lp)
            self.draws[child] += 1
            self.n_draws[n] += 1
            out[i] = child
        return out

    def evaluate(self, nodes: np.ndarray) -> None:
        """Make sure the rows of `nodes` are held: run the prior once, as one batch, on those that still
        need p(.|s) (not evaluated yet, or their row was evicted from the pool). Terminals are skipped."""
        nodes = np.unique(nodes[~self.terminal[nodes]])
        held = self.slot[nodes] >= 0
        self.rows.begin()
        self.rows.touch(self.slot[nodes[held]])
        todo = nodes[~held]
        if len(todo):
            again = todo[self.evaluated[todo]]
            old = self.handle[again]
            handles, logp = self.problem.prior.advance_rows(self.handle[self.parent[todo]], self.token[todo])
            self._set_evaluated(todo, handles, logp)
            if len(again):
                self.reloads += len(again)
                self.problem.prior.release(old)

    def rollout(self, starts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sample from the prior from each start node to a terminal, keeping every node in the tree.

        starts: [B] nodes (repeats allowed). All rows advance together, so each step is one batched
        model call over the distinct new prefixes. Returns [B] terminal leaves, rewards computed.
        """
        cur = np.asarray(starts, dtype=np.int64).copy()
        live = np.flatnonzero(~self.terminal[cur])
        while len(live):
            self.evaluate(cur[live])
            cur[live] = self.draw(cur[live], rng)
            live = live[~self.terminal[cur[live]]]
        for leaf in cur.tolist():
            self.leaf_reward(leaf)
        return cur

    def descend(self, rng: np.random.Generator, c: float, alpha: float,
                choose: Callable[["Tree", int, np.ndarray, np.random.Generator], int]) -> int:
        """Select: walk down from the root to where this iteration's rollout should start.

        At each node: stop at a terminal, or at a node not evaluated yet (added earlier in this
        round); if the node may still widen (or none of its children has been backed up yet),
        draw a new token from the prior (landing on an existing child continues the walk);
        otherwise `choose` among the children that have been backed up.
        """
        n = ROOT
        while not self.terminal[n] and self.evaluated[n]:
            kids = self.children(n)
            kids = kids[self.visits[kids] > 0]
            if len(kids) == 0 or self.can_widen(n, c, alpha):
                n = int(self.draw(np.array([n]), rng)[0])
            else:
                n = choose(self, n, kids, rng)
        return n


def save_graphml(tree: Tree, path: str) -> None:
    """Export the tree (per node: token, text, depth, visits, value, logp, reward) for inspection."""
    import networkx as nx

    vocab = tree.problem.prior.vocab
    g = nx.DiGraph()
    for n in range(tree.size):
        tok = int(tree.token[n])
        g.add_node(
            n,
            token=tok,
            text=vocab[tok] if 0 <= tok < len(vocab) else "<root>",
            depth=int(tree.depth[n]),
            visits=int(tree.visits[n]),
            value=float(tree.value[n]),
            logp=float(tree.logp[n]),
            draws=int(tree.draws[n]),
            terminal=bool(tree.terminal[n]),
            reward=float(tree.reward[n]) if not np.isnan(tree.reward[n]) else float("nan"),
        )
        if n != ROOT:
            g.add_edge(int(tree.parent[n]), n)
    nx.write_graphml(g, path)

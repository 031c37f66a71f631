"""A search tree over token prefixes, stored as a struct of arrays. Storage only: the moves that
grow it (select, expand, rollout, backup) are functions in `search/dts.py`.

Node 0 is the root (the empty prefix after the prompt); a child's index is always larger than its
parent's. Each node is a distinct prefix: a draw of a token a node already has as a child lands on
that child (its `draws` grows) instead of making a duplicate.

Node fields, all [N] (N grows by doubling):
    parent, token, depth       structure (root: parent NO_PARENT, token NO_TOKEN, depth 0)
    logp                       log p(token | parent prefix)
    draws                      how many times the parent drew this token (multiplicity)
    n_draws                    how many tokens this node has drawn
    visits, value              backup statistics (their meaning is the search method's)
    terminal, reward           terminal = EOS or max_len reached; reward NaN until computed
    handle, evaluated          the prior's handle and whether p(.|s) has been computed
    slot                       where `rows` holds the node's next-token rows (NO_SLOT: not held)
    kid_start, kid_count, kid_cap
                               the node's children: kids[kid_start : kid_start + kid_count], in
                               creation order, in a block of kid_cap entries of the 1-D array `kids`;
                               a full block moves to the end of `kids` at twice its size
A search may add fields of its own (`extra_fields`, e.g. S-ADT's `flow`).

No node field is as wide as the vocabulary: a node's next-token rows [V] live in `rows`, a
`RowPool` bounded in bytes (on the model's device when the prior keeps rows there).
"""

from __future__ import annotations

import numpy as np

from specdifftree.search.rows import RowPool

ROOT = 0
NO_PARENT = -1
NO_TOKEN = -1
NO_SLOT = -1
NO_NODE = -1

FIELDS = {
    "parent": np.int64, "token": np.int64, "depth": np.int64, "logp": np.float64,
    "draws": np.int64, "n_draws": np.int64, "visits": np.int64, "value": np.float64,
    "terminal": bool, "reward": np.float64, "handle": np.int64, "evaluated": bool, "slot": np.int64,
    "kid_start": np.int64, "kid_count": np.int64, "kid_cap": np.int64,
}


class Tree:
    """Node fields as arrays (module docstring), the child blocks `kids` [M], and the row pool.

    eos, max_len: when a node is terminal; vocab: token strings (for export only).
    reloads: rows recomputed after eviction from the pool (each one forward token).
    """

    def __init__(self, eos: int, max_len: int, vocab=(), capacity: int = 1024, row_bytes: int | None = None,
                 extra_fields: dict | None = None):
        self.eos, self.max_len, self.vocab = int(eos), int(max_len), vocab
        self.fields = {**FIELDS, **(extra_fields or {})}
        self.size = 0
        self.capacity = 0
        self._grow(capacity)
        self.kids = np.zeros(capacity, np.int64)
        self.kids_used = 0
        self.rows = RowPool(row_bytes, pinned=ROOT)  # default: rows.ROW_POOL_BYTES
        self.reloads = 0

    def _grow(self, capacity: int) -> None:
        for name, dtype in self.fields.items():
            old = getattr(self, name, np.zeros(0, dtype))
            new = np.zeros(capacity, dtype)
            new[: len(old)] = old
            setattr(self, name, new)
        self.capacity = capacity

    def add(self, parent: int, token: int, logp: float) -> int:
        """Append the node parent.token with log p(token | parent) and link it; returns its index."""
        if self.size == self.capacity:
            self._grow(2 * self.capacity)
        n = self.size
        self.size += 1
        self.parent[n], self.token[n], self.logp[n] = parent, token, logp
        self.depth[n] = 0 if parent < 0 else self.depth[parent] + 1
        self.terminal[n] = token == self.eos or self.depth[n] >= self.max_len
        self.reward[n] = np.nan
        self.slot[n] = NO_SLOT
        if parent >= 0:
            self._link(parent, n)
        return n

    def _link(self, parent: int, child: int) -> None:
        first, count = int(self.kid_start[parent]), int(self.kid_count[parent])
        if count == self.kid_cap[parent]:  # block full: move it to the end of `kids`, twice as large
            cap = max(2 * count, 2)
            if self.kids_used + cap > len(self.kids):
                self.kids = np.concatenate([self.kids, np.zeros(max(len(self.kids), cap), np.int64)])
            self.kids[self.kids_used: self.kids_used + count] = self.kids[first: first + count]
            first = self.kid_start[parent] = self.kids_used
            self.kid_cap[parent] = cap
            self.kids_used += cap
        self.kids[first + count] = child
        self.kid_count[parent] = count + 1

    # ------------------------------------------------------------- reading

    def children(self, n: int) -> np.ndarray:
        """[K] child ids of node n, in creation order (a view: copy before adding nodes)."""
        first = self.kid_start[n]
        return self.kids[first: first + self.kid_count[n]]

    def child(self, n: int, token: int) -> int:
        """The child of n reached by `token`, or NO_NODE."""
        kids = self.children(n)
        hit = np.flatnonzero(self.token[kids] == token)
        return int(kids[hit[0]]) if len(hit) else NO_NODE

    def tokens(self, n: int) -> list[int]:
        """Tokens from the root to n, EOS excluded."""
        out = []
        while n > ROOT:
            out.append(int(self.token[n]))
            n = int(self.parent[n])
        out.reverse()
        return [t for t in out if t != self.eos]

    def path_logp(self, n: int) -> float:
        """log p(x|c) of the path to n under the prior."""
        total = 0.0
        while n > ROOT:
            total += self.logp[n]
            n = int(self.parent[n])
        return float(total)

    def log_weight(self, nodes: np.ndarray, rule: str) -> np.ndarray:
        """log of each child's weight at its parent: log p(a|s) ("prior") or log multiplicity ("count")."""
        return self.logp[nodes] if rule == "prior" else np.log(self.draws[nodes])


def save_graphml(tree: Tree, path: str) -> None:
    """Export the tree (per node: token, text, depth, visits, value, logp, reward) for inspection."""
    import networkx as nx

    vocab = tree.vocab
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

"""Next-token log-prob rows of tree nodes, held in a pool bounded in bytes.

A row is a node's log p(.|s) over the whole vocabulary: [V] floats, 608 KB at V = 151,936. A tree
needs a node's row only to draw more children from it, so rows are not node fields: `RowPool`
keeps them in at most `max_bytes` (a numpy array on the host, or a torch tensor on the model's
device, whichever the prior gives), evicting the least recently used row when full. A node whose
row was evicted and that draws again has it recomputed by the prior from its parent (one forward
token, counted on the prior's cost), so every draw is still exactly from p(.|s).

Rows may have several channels of the same shape (S-ADT: log q, log p, F_phi of each child); draws
come from channel 0 (`search.sampler.sample`).
"""

from __future__ import annotations

import numpy as np

from specdifftree.search.sampler import is_numpy, to_numpy

ROW_POOL_BYTES = 256 * 2**20  # rows held at most, all channels together
MIN_ROWS = 64  # rows held whatever the vocabulary (a batch's rows must fit at once)


def _empty_like_rows(row, n: int):
    """[n, V] zeros of the row's kind (numpy, or torch on the row's device), with the row's dtype."""
    if is_numpy(row):
        return np.zeros((n, row.shape[-1]), row.dtype)
    import torch

    return torch.zeros((n, row.shape[-1]), dtype=row.dtype, device=row.device)


def _cat(a, b):
    if is_numpy(a):
        return np.concatenate([a, b])
    import torch

    return torch.cat([a, b])


def _put(dst, slots: np.ndarray, rows) -> None:
    if is_numpy(dst):
        dst[slots] = rows if is_numpy(rows) else to_numpy(rows)
        return
    import torch

    src = rows if not is_numpy(rows) else torch.from_numpy(np.asarray(rows, np.float32))
    dst.index_copy_(0, torch.as_tensor(slots, device=dst.device), src.to(device=dst.device, dtype=dst.dtype))


def _take(src, slots: np.ndarray):
    if is_numpy(src):
        return src[slots]
    import torch

    return src.index_select(0, torch.as_tensor(slots, device=src.device))


class RowPool:
    """Rows of up to `limit` nodes: `data[c]` [R, V] per channel (R grows by doubling up to `limit`).

    owner [R]: the node in each slot (-1: free); used [R]: when each slot was last read or written.
    `slot_of` (the tree's [N] node field, -1: no row) is passed in and kept in step with `owner`.
    `pinned`: a node whose row is never evicted (the root: recomputing it would re-run the prompt).
    """

    def __init__(self, max_bytes: int | None = None, pinned: int = 0):
        self.max_bytes = ROW_POOL_BYTES if max_bytes is None else max_bytes
        self.pinned = pinned
        self.data: list | None = None
        self.owner = np.zeros(0, np.int64)
        self.used = np.zeros(0, np.int64)
        self.limit = 0
        self.tick = 0
        self.evictions = 0

    @property
    def nbytes(self) -> int:
        """Bytes the pool's rows take now."""
        if self.data is None:
            return 0
        return sum(int(d.nbytes) if is_numpy(d) else d.numel() * d.element_size() for d in self.data)

    def begin(self) -> None:
        """Start a new use: rows touched or written from now on are not evicted until the next `begin`."""
        self.tick += 1

    def touch(self, slots: np.ndarray) -> None:
        self.used[slots] = self.tick

    def put(self, nodes: np.ndarray, channels: list, slot_of: np.ndarray) -> None:
        """Hold the rows of `nodes` [B]: channels, each [B, V]."""
        if self.data is None:
            self._allocate(channels)
        slots = self._free_slots(len(nodes), slot_of)
        for dst, rows in zip(self.data, channels):
            _put(dst, slots, rows)
        self.owner[slots] = nodes
        self.used[slots] = self.tick
        slot_of[nodes] = slots

    def take(self, slots: np.ndarray, channel: int = 0):
        """Rows at `slots` [B] -> [B, V] (the pool's kind)."""
        return _take(self.data[channel], slots)

    def value(self, slot: int, channel: int, token: int) -> float:
        """One entry: channel c of the row in `slot`, at `token`."""
        return float(self.data[channel][slot, token])

    def _allocate(self, channels: list) -> None:
        per_row = sum(c.shape[-1] * (c.itemsize if is_numpy(c) else c.element_size()) for c in channels)
        self.limit = max(MIN_ROWS, self.max_bytes // max(per_row, 1))
        n = min(MIN_ROWS, self.limit)
        self.data = [_empty_like_rows(c, n) for c in channels]
        self.owner = np.full(n, -1, np.int64)
        self.used = np.zeros(n, np.int64)

    def _free_slots(self, k: int, slot_of: np.ndarray) -> np.ndarray:
        """k slots to write: free ones first, growing up to `limit`, then the least recently used
        rows not touched in this tick and not pinned (beyond that the pool grows past `limit`)."""
        free = np.flatnonzero(self.owner < 0)
        while len(free) < k and len(self.owner) < self.limit:
            self._grow(min(2 * len(self.owner), self.limit))
            free = np.flatnonzero(self.owner < 0)
        if len(free) >= k:
            return free[:k]
        need = k - len(free)
        evictable = np.flatnonzero((self.owner >= 0) & (self.owner != self.pinned) & (self.used < self.tick))
        if len(evictable) < need:  # every held row is in use right now: hold more than `limit`
            self._grow(len(self.owner) + need - len(evictable))
            return self._free_slots(k, slot_of)
        victims = evictable[np.argpartition(self.used[evictable], need - 1)[:need]] if need < len(evictable) \
            else evictable
        slot_of[self.owner[victims]] = -1
        self.owner[victims] = -1
        self.evictions += len(victims)
        return np.concatenate([free, victims])

    def _grow(self, n: int) -> None:
        extra = n - len(self.owner)
        self.data = [_cat(d, _empty_like_rows(d[:1], extra)) for d in self.data]
        self.owner = np.concatenate([self.owner, np.full(extra, -1, np.int64)])
        self.used = np.concatenate([self.used, np.zeros(extra, np.int64)])

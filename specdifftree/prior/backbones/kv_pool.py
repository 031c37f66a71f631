"""Storage for the transformers backbone's tree-shaped KV cache: a growable pool of slots, one per
prefix position, each holding that position's keys and values in every layer and its last-layer
hidden state.

    pool = KVPool(n_layers, kv_heads, head_dim, d_model, dtype, device)
    slots = pool.alloc(n)                    # [n] int64, the pool doubles when it runs out
    pool.keys[l][slots], pool.values[l][slots]    # [n, kv_heads, head_dim]
    idx, lens = left_padded(paths, new_slots)     # B slot paths -> one gather index [B, L+1]
    pool.free(slots)

The pool knows nothing about handles or models: `HFBackbone` owns the slot path of every handle
and `hf_cache.py` reads and writes the pool from inside the model's attention layers.
"""

from __future__ import annotations

import numpy as np
import torch

PAD_SLOT = 0  # a zero slot that left padding points at (masked, but finite)


class KVPool:
    """Preallocated, growable per-slot storage of keys, values and last-layer hidden states.

    keys[l], values[l]: [S, kv_heads, head_dim] for layer l; hidden: [S, D]. Slot 0 is padding
    and is never handed out. Freed slots go on a stack and are reused first.
    """

    def __init__(self, n_layers: int, kv_heads: int, head_dim: int, d_model: int,
                 dtype: torch.dtype, device: torch.device, capacity: int = 1024):
        kw = {"dtype": dtype, "device": device}
        self.keys = [torch.zeros(capacity, kv_heads, head_dim, **kw) for _ in range(n_layers)]
        self.values = [torch.zeros(capacity, kv_heads, head_dim, **kw) for _ in range(n_layers)]
        self.hidden = torch.zeros(capacity, d_model, **kw)
        self._free = np.arange(capacity - 1, PAD_SLOT, -1, dtype=np.int64)
        self._n_free = capacity - 1
        self._refresh_numpy()

    @property
    def capacity(self) -> int:
        return self.hidden.shape[0]

    @property
    def in_use(self) -> int:
        """Slots held by live handles (padding excluded)."""
        return self.capacity - 1 - self._n_free

    def alloc(self, n: int) -> np.ndarray:
        """[n] free slots (int64), growing the pool if needed."""
        while self._n_free < n:
            self._grow()
        self._n_free -= n
        return self._free[self._n_free: self._n_free + n][::-1].copy()

    def free(self, slots: np.ndarray) -> None:
        self._free[self._n_free: self._n_free + len(slots)] = slots
        self._n_free += len(slots)

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """slots [B] long; k, v [B, kv_heads, head_dim] (any strides)."""
        self.keys[layer].index_copy_(0, slots, k)
        self.values[layer].index_copy_(0, slots, v)

    def gather(self, layer: int, idx: np.ndarray, idx_t: torch.Tensor,
               k_out: torch.Tensor, v_out: torch.Tensor) -> None:
        """k_out[i] = keys[layer][idx[i]] (same for values); idx [N] int64, outs [N, kv_heads, head_dim].

        On CPU numpy's take (no bounds buffering) is several times faster than index_select for
        rows of a few hundred bytes; elsewhere index_select.
        """
        if self._np_keys is not None:
            np.take(self._np_keys[layer], idx, axis=0, out=_as_numpy(k_out), mode="clip")
            np.take(self._np_values[layer], idx, axis=0, out=_as_numpy(v_out), mode="clip")
        else:
            torch.index_select(self.keys[layer], 0, idx_t, out=k_out)
            torch.index_select(self.values[layer], 0, idx_t, out=v_out)

    def _grow(self) -> None:
        """Double every buffer, one at a time: each old buffer is freed as soon as its copy exists,
        so growing costs one buffer's worth on top, not the whole pool again (measured on a 2-layer
        Qwen3 shape: the pool at 80 -> 160 MiB made the search's peak 80 MiB higher than its end)."""
        old = self.capacity
        self._np_keys = self._np_values = None  # numpy views would keep the old buffers alive
        for bufs in (self.keys, self.values):
            for i in range(len(bufs)):
                bufs[i] = _doubled(bufs[i])
        self.hidden = _doubled(self.hidden)
        free = np.empty(2 * old, dtype=np.int64)
        free[:old] = np.arange(2 * old - 1, old - 1, -1)       # new slots at the bottom of the stack
        free[old: old + self._n_free] = self._free[: self._n_free]
        self._free, self._n_free = free, self._n_free + old
        self._refresh_numpy()

    def _refresh_numpy(self) -> None:
        on_cpu = self.hidden.device.type == "cpu"
        self._np_keys = [_as_numpy(t) for t in self.keys] if on_cpu else None
        self._np_values = [_as_numpy(t) for t in self.values] if on_cpu else None


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor's memory; bfloat16 (which numpy lacks) as its int16 bits, since
    the pool only copies rows."""
    return t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()


def _doubled(t: torch.Tensor) -> torch.Tensor:
    """[S, ...] -> [2S, ...], the new rows zero."""
    out = t.new_zeros((2 * t.shape[0], *t.shape[1:]))
    out[: t.shape[0]] = t
    return out


def left_padded(paths: list[np.ndarray], new_slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """B slot paths (lengths <= L) and new slots [B] -> (idx [B, L+1] int64, lens [B] int64).

    Row i is PAD_SLOT..., paths[i], new_slots[i]: ancestors right-aligned next to the new slot.
    """
    lens = np.fromiter((len(p) for p in paths), dtype=np.int64, count=len(paths))
    L = int(lens.max())
    idx = np.full((len(paths), L + 1), PAD_SLOT, dtype=np.int64)
    idx[:, L] = new_slots
    for i, p in enumerate(paths):
        idx[i, L - len(p): L] = p
    return idx, lens

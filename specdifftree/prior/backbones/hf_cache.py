"""The transformers cache that `HFBackbone.advance` hands the model: per layer, `update` writes the
B new tokens' K/V into their `KVPool` slots and returns every row's whole K/V gathered from the pool.

    step = PoolStep(pool); cache = pool_cache(step, n_layers)
    step.set(idx)                                     # idx [B, L+1]: left-padded slot paths + new slots
    model(input_ids [B, 1], attention_mask=step_mask(lens, L+1, dtype), position_ids=lens[:, None],
          cache=cache, use_cache=True)
    # inside each attention layer: cache.layers[l].update(k, v) -> K, V [B, kv_heads, L+1, head_dim]

transformers calls `update` and `update` does the work itself (pool write, then one gather into a
buffer every layer reuses), so the model reaches the pool in one frame. The K/V a layer gets are
views of that shared buffer, which the next layer overwrites.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from specdifftree.prior.backbones.kv_pool import KVPool


class PoolStep:
    """What one batched `advance` hands every cache layer: the gather index and a shared buffer."""

    def __init__(self, pool: KVPool):
        self.pool = pool
        self.idx = np.zeros(0, dtype=np.int64)        # [B * (L+1)] slots, row-major
        self.idx_t = torch.zeros(0, dtype=torch.long)
        self.new_slots = torch.zeros(0, dtype=torch.long)  # [B]
        self.width = 0                                # L + 1
        self._buf = None                              # (keys, values) flat buffers
        self.cascade = False                          # cascade mode (hf_cascade.py) for this forward
        self.groups = self.rows_per_group = 0         # G roots, R places per root
        self.prefix_idx = np.zeros(0, dtype=np.int64)  # [G * P] the roots' prompt slots, padded with PAD_SLOT
        self.prefix_idx_t = torch.zeros(0, dtype=torch.long)
        self.prefix_width = 0                         # P
        self.prefix_mask = torch.zeros(0)             # [G, 1, 1, P] additive
        self.row_slot_t = torch.zeros(0, dtype=torch.long)  # [B] group * R + place of each row
        self.kp = self.vp = None                      # [G, kv_heads, P, head_dim] this layer's prompt K/V
        self._pbuf = None

    def set(self, idx: np.ndarray) -> None:
        """idx [B, L+1] int64: each row's left-padded path, its new slot in the last column."""
        device = self.pool.hidden.device
        self.width = idx.shape[1]
        self.idx = idx.reshape(-1)
        self.idx_t = torch.from_numpy(self.idx).to(device)
        self.new_slots = torch.from_numpy(np.ascontiguousarray(idx[:, -1])).to(device)

    def set_cascade(self, prefix_idx: np.ndarray, prefix_lens: np.ndarray, row_slot: np.ndarray,
                    rows_per_group: int) -> None:
        """Cascade mode for the next forward (call after `set` with the suffix index): prefix_idx
        [G, P] int64 each root's prompt slots left-aligned (PAD_SLOT after), prefix_lens [G],
        row_slot [B] = group * rows_per_group + place of each row."""
        device = self.pool.hidden.device
        self.cascade = True
        self.groups, self.prefix_width = prefix_idx.shape
        self.rows_per_group = rows_per_group
        self.prefix_idx = prefix_idx.reshape(-1)
        self.prefix_idx_t = torch.from_numpy(self.prefix_idx).to(device)
        self.row_slot_t = torch.from_numpy(row_slot).to(device)
        keep = torch.arange(self.prefix_width, device=device)[None, :] < torch.from_numpy(prefix_lens).to(device)[:, None]
        mask = torch.zeros(keep.shape, dtype=torch.float32, device=device)  # the cascade scores are float32
        self.prefix_mask = mask.masked_fill_(~keep, torch.finfo(mask.dtype).min)[:, None, None, :]

    def buffers(self, numel: int, like: torch.Tensor, prefix: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Two flat buffers of at least `numel` elements (the rows' K/V, or with `prefix` the roots'
        prompt K/V in cascade mode), grown by half again when short (no allocation per step)."""
        name = "_pbuf" if prefix else "_buf"
        bufs = getattr(self, name)
        if bufs is None or bufs[0].numel() < numel:
            bufs = tuple(torch.empty(numel * 3 // 2, dtype=like.dtype, device=like.device) for _ in range(2))
            setattr(self, name, bufs)
        return bufs[0][:numel], bufs[1][:numel]


class _PoolLayer(DynamicLayer):
    """Layer `layer` of the cache the model sees during `advance`."""

    def __init__(self, step: PoolStep, layer: int):
        super().__init__()
        self.step, self.layer = step, layer
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """k, v [B, kv_heads, 1, head_dim] of the new tokens -> all K, V [B, kv_heads, L+1, head_dim]."""
        step, pool, layer = self.step, self.step.pool, self.layer
        B, H, _, D = key_states.shape
        pool.keys[layer].index_copy_(0, step.new_slots, key_states[:, :, 0])
        pool.values[layer].index_copy_(0, step.new_slots, value_states[:, :, 0])
        n = len(step.idx)
        kb, vb = step.buffers(n * H * D, key_states)
        kb, vb = kb.view(n, H, D), vb.view(n, H, D)
        pool.gather(layer, step.idx, step.idx_t, kb, vb)
        if step.cascade:
            G, P = step.groups, step.prefix_width
            kp, vp = step.buffers(G * P * H * D, key_states, prefix=True)
            kp, vp = kp.view(G * P, H, D), vp.view(G * P, H, D)
            pool.gather(layer, step.prefix_idx, step.prefix_idx_t, kp, vp)
            step.kp, step.vp = kp.view(G, P, H, D).transpose(1, 2), vp.view(G, P, H, D).transpose(1, 2)
        return (kb.view(B, step.width, H, D).transpose(1, 2), vb.view(B, step.width, H, D).transpose(1, 2))

    def get_seq_length(self) -> int:
        return self.step.width - 1

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.step.width - 1 + query_length, 0


def pool_cache(step: PoolStep, n_layers: int) -> DynamicCache:
    """A DynamicCache whose `n_layers` layers read and write the pool through `step`."""
    cache = DynamicCache()
    cache.layers = [_PoolLayer(step, i) for i in range(n_layers)]
    return cache


def step_mask(lens: torch.Tensor, width: int, dtype: torch.dtype,
              window: int | None = None) -> torch.Tensor:
    """Additive mask [B, 1, 1, width] for one new token per row, rows left-padded.

    lens: [B] past length of each row (its new token sits at position lens[i], column width-1).
    Column c holds position c - (width - 1 - lens[i]); negative positions are padding. With a
    sliding `window`, only positions p with lens[i] - p < window are kept.
    """
    col = torch.arange(width, device=lens.device)[None, :]
    pad = (width - 1 - lens)[:, None]
    keep = col >= pad
    if window is not None:
        keep &= col > pad + lens[:, None] - window
    mask = torch.zeros(keep.shape, dtype=dtype, device=lens.device)
    mask.masked_fill_(~keep, torch.finfo(dtype).min)
    return mask[:, None, None, :]

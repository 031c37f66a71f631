"""transformers backend: any causal LM as a `Backbone`, its KV cache shaped like the search tree.

Every handle owns the K/V of the positions it added (the prompt for a root handle, one token for
an advanced one) in a `KVPool` of slots, and keeps the slot path from its root. `advance` on B
handles runs ONE forward over the B new tokens:

    path slots [B, <=L] --left-pad--> idx [B, L+1] (last column: the new slots)
    attention_mask [B, 1, 1, L+1] (padding masked), position_ids [B, 1] = each row's true depth
    per layer, inside the cache's `update`: the new K/V go into the pool, then one gather
    pool[idx] -> K, V [B, kv_heads, L+1, head_dim] (views of a buffer reused by every layer)

so no prefix is ever run twice, and `release` returns slots to a free list (reference counts:
a slot is freed when neither its handle nor any live descendant needs it).

Supported: decoder-only models whose layers are full or sliding-window attention (Llama, Qwen,
Gemma-3), with the eager or sdpa attention implementation. The K/V the model gets for one layer
are views of a buffer that the next layer overwrites, so models that share K/V across layers
(Gemma-3n) are not supported.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from specdifftree.errors import SDTError
from specdifftree.prior.backbones.base import Backbone, Placement, steady_host_memory
from specdifftree.prior.base import Cost

PAD_SLOT = 0  # a zero slot that left padding points at (masked, but finite)
_ATTENTION_TYPES = ("full_attention", "sliding_attention")


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


class _Step:
    """What one batched `advance` hands the cache layers: the gather index and a shared buffer."""

    def __init__(self, pool: KVPool):
        self.pool = pool
        self.idx = np.zeros(0, dtype=np.int64)        # [B * (L+1)] slots, row-major
        self.idx_t = torch.zeros(0, dtype=torch.long)
        self.new_slots = torch.zeros(0, dtype=torch.long)  # [B]
        self.width = 0                                # L + 1
        self._kbuf = self._vbuf = None

    def set(self, idx: np.ndarray) -> None:
        """idx [B, L+1] int64: each row's left-padded path, its new slot in the last column."""
        device = self.pool.hidden.device
        self.width = idx.shape[1]
        self.idx = idx.reshape(-1)
        self.idx_t = torch.from_numpy(self.idx).to(device)
        self.new_slots = torch.from_numpy(np.ascontiguousarray(idx[:, -1])).to(device)

    def kv(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v [B, kv_heads, 1, head_dim] of the new tokens -> all K, V [B, kv_heads, L+1, head_dim]."""
        B, H, _, D = k.shape
        self.pool.write(layer, self.new_slots, k[:, :, 0], v[:, :, 0])
        n = len(self.idx)
        if self._kbuf is None or self._kbuf.numel() < n * H * D:  # grow by half again: no realloc per step
            self._kbuf = torch.empty(n * H * D * 3 // 2, dtype=k.dtype, device=k.device)
            self._vbuf = torch.empty_like(self._kbuf)
        kb, vb = self._kbuf[: n * H * D].view(n, H, D), self._vbuf[: n * H * D].view(n, H, D)
        self.pool.gather(layer, self.idx, self.idx_t, kb, vb)
        return (kb.view(B, self.width, H, D).transpose(1, 2), vb.view(B, self.width, H, D).transpose(1, 2))


class _PoolLayer(DynamicLayer):
    """Layer `layer` of the cache the model sees during `advance`: `update` appends the new K/V
    to the pool and returns the rows' whole (left-padded) K/V, gathered from the pool."""

    def __init__(self, step: _Step, layer: int):
        super().__init__()
        self.step, self.layer = step, layer
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        return self.step.kv(self.layer, key_states, value_states)

    def get_seq_length(self) -> int:
        return self.step.width - 1

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.step.width - 1 + query_length, 0


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


def prepend_soft_prompt(model, input_ids: torch.Tensor, soft: torch.Tensor,
                        soft_mask: torch.Tensor | None = None,
                        attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Keyword inputs for `model(**inputs)` with soft-prompt rows before each row's token embeddings.

    input_ids [B, T]; soft [B, P, D] (from `PriorParts.soft_prompt`); soft_mask [B, P] bool
    (False: a padded patch); attention_mask [B, T] (1: a real token). Returns inputs_embeds
    [B, P+T, D], attention_mask [B, P+T] and position_ids [B, P+T] that skip masked entries, so a
    padded row gets the logits it gets alone. Gradients flow into `soft`; the model may stay frozen.
    """
    embed = model.get_input_embeddings()
    B, D = input_ids.shape[0], embed.weight.shape[1]
    if soft.ndim != 3 or soft.shape[0] != B or soft.shape[2] != D:
        raise SDTError(f"soft prompt of shape {list(soft.shape)} does not fit this backbone, which wants "
                       f"[{B}, P, {D}]: was the projector trained for another backbone?")
    ones = {"dtype": torch.long, "device": input_ids.device}
    soft_mask = torch.ones(soft.shape[:2], **ones) if soft_mask is None else soft_mask.to(**ones)
    attention_mask = torch.ones(input_ids.shape, **ones) if attention_mask is None else attention_mask.to(**ones)
    mask = torch.cat([soft_mask, attention_mask], dim=1)
    embeds = torch.cat([soft.to(embed.weight.dtype), embed(input_ids)], dim=1)
    return {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": (mask.cumsum(1) - 1).clamp_min(0)}


class HFBackbone(Backbone):
    """A transformers causal LM behind the `Backbone` interface, prefixes shared through a `KVPool`.

    HFBackbone(model, tokenizer) wraps loaded objects; `HFBackbone.from_pretrained(path_or_id)`
    loads both (float32, eval). Attributes: vocab_size, eos_id, cost, pool (None before `start`).
    """

    def __init__(self, model, tokenizer, pool_capacity: int = 1024):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = model.config.get_text_config(decoder=True)
        impl = getattr(model.config, "_attn_implementation", "sdpa")
        if impl not in ("eager", "sdpa"):
            raise SDTError(f"attention implementation '{impl}' is not supported by HFBackbone; "
                           "load the model with attn_implementation='sdpa' (or 'eager')")
        self._layer_types = self._check_layer_types()
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        if self.device.type == "cpu":
            steady_host_memory()
        out = model.get_output_embeddings()
        self.vocab_size = int(out.weight.shape[0]) if out is not None else int(self.config.vocab_size)
        self.eos_id = self._eos_id()
        self.cost = Cost()
        self.pool: KVPool | None = None
        self._pool_capacity = pool_capacity
        self._step: _Step | None = None
        self._cache: DynamicCache | None = None
        self._keep_last = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._token_strings: list[str] | None = None
        # per handle: slot path from its root (int32, None once freed), parent (-1: root),
        # references (the caller's own + one per live child), released by the caller
        self._path: list[np.ndarray | None] = []
        self._parent: list[int] = []
        self._refs: list[int] = []
        self._released: list[bool] = []

    @classmethod
    def from_pretrained(cls, path_or_id: str, placement: Placement | None = None, **model_kwargs) -> "HFBackbone":
        """Load model and tokenizer from a local folder (or a hub id, when a hub is reachable), on the
        device and in the dtype of `placement` (default: auto, see `Placement`)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        placement = (placement or Placement()).validate()
        device = placement.torch_device()
        dtype = placement.torch_dtype(device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path_or_id)
            model = AutoModelForCausalLM.from_pretrained(path_or_id, dtype=dtype, **model_kwargs)
        except Exception as e:  # noqa: BLE001 - a truncated or corrupt weights file raises its own types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise SDTError(f"could not load a causal LM from '{path_or_id}': {first}. Pass a local model "
                           "folder with complete weights (no hub is reachable offline).") from None
        return cls(model.to(device), tokenizer)

    # ------------------------------------------------------------- text

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_strings(self) -> list[str]:
        """Readable text per id (byte-level pieces decoded; raw piece where a byte is a partial
        character; `<id>` for ids the tokenizer lacks)."""
        if self._token_strings is None:
            n = len(self.tokenizer)
            pieces = self.tokenizer.convert_ids_to_tokens(list(range(min(n, self.vocab_size))))
            out = [self._readable(p) if p is not None else f"<{i}>" for i, p in enumerate(pieces)]
            out += [f"<{i}>" for i in range(len(out), self.vocab_size)]
            self._token_strings = out
        return list(self._token_strings)

    def _readable(self, piece: str) -> str:
        if piece in self.tokenizer.all_special_tokens:
            return piece
        text = self.tokenizer.convert_tokens_to_string([piece])
        return piece if "\ufffd" in text or text == "" else text

    def _eos_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        if eos is None:
            eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
            eos = eos[0] if isinstance(eos, (list, tuple)) else eos
        if eos is None:
            raise SDTError("the tokenizer has no EOS token and the model's generation config names none")
        return int(eos)

    def _check_layer_types(self) -> list[str] | None:
        types = getattr(self.config, "layer_types", None)
        if not types or all(t == "full_attention" for t in types):
            return None
        unknown = sorted(set(types) - set(_ATTENTION_TYPES))
        if unknown:
            raise SDTError(f"HFBackbone does not support attention layer types {unknown}")
        return list(types)

    # ------------------------------------------------------------- handles

    @torch.inference_mode()
    def start_logits(self, prompt_ids: list[int], soft_prompt: np.ndarray | None = None) -> tuple[int, torch.Tensor]:
        """Prefill the prompt once ([T] ids, T >= 1) with a plain DynamicCache, then move its K/V
        into fresh pool slots owned by the new root handle. Returns (handle, logits [V] float32 on
        the model's device).

        soft_prompt: [P, D] embeddings placed before the prompt's token embeddings (OpenTSLM-SP);
        the pool then holds P + T positions, so later tokens continue at position P + T."""
        ids = torch.as_tensor(list(prompt_ids), dtype=torch.long, device=self.device)
        if ids.numel() == 0:
            raise SDTError("HFBackbone.start needs at least one prompt token (e.g. BOS)")
        if soft_prompt is None:
            return self._prefill({"input_ids": ids[None]})
        soft = torch.as_tensor(np.asarray(soft_prompt), dtype=self.dtype, device=self.device)
        return self._prefill(prepend_soft_prompt(self.model, ids[None], soft[None]))

    def start_segments(self, segments: list) -> tuple[int, np.ndarray]:
        """`start_segments_logits`, with the logits [V] float32 as numpy."""
        handle, logits = self.start_segments_logits(segments)
        return handle, logits.cpu().numpy()

    @torch.inference_mode()
    def start_segments_logits(self, segments: list) -> tuple[int, torch.Tensor]:
        """Prefill token segments and embedding segments interleaved in one sequence (OpenTSLM-SP's
        layout: text, series patches, text, ...), once. Returns (handle, logits [V] float32 on the
        model's device).

        segments: each a list of token ids [T_i] or a float array of embeddings [P_i, D]; the
        handle's prefix holds sum(T_i) + sum(P_i) positions, counted once on `cost`."""
        embed = self.model.get_input_embeddings()
        parts = []
        for seg in segments:
            arr = np.asarray(seg)
            if arr.ndim == 2:
                if arr.shape[1] != embed.weight.shape[1]:
                    raise SDTError(f"embedding segment of width {arr.shape[1]} does not fit this backbone "
                                   f"(embedding width {embed.weight.shape[1]})")
                parts.append(torch.as_tensor(arr, dtype=self.dtype, device=self.device))
            elif arr.size:
                parts.append(embed(torch.as_tensor(arr.astype(np.int64).reshape(-1), device=self.device)))
        if not parts:
            raise SDTError("HFBackbone.start_segments needs at least one position")
        return self._prefill({"inputs_embeds": torch.cat(parts)[None]})

    def _prefill(self, inputs: dict) -> tuple[int, np.ndarray]:
        cache = DynamicCache()
        kw = {"logits_to_keep": 1} if self._keep_last else {}
        out = self.model(**inputs, cache=cache, use_cache=True, output_hidden_states=True, **kw)
        self._ensure_pool(cache, out.hidden_states[-1])
        n = cache.layers[0].keys.shape[2]  # positions prefilled
        slots = self.pool.alloc(n)
        slots_t = torch.from_numpy(slots).to(self.device)
        for layer, cl in enumerate(cache.layers):
            self.pool.write(layer, slots_t, cl.keys[0].transpose(0, 1), cl.values[0].transpose(0, 1))
        self.pool.hidden[slots[-1]] = out.hidden_states[-1][0, -1]
        self.cost.add(n)
        handle = self._new_handle(slots.astype(np.int32), -1)
        return handle, out.logits[0, -1].float()

    def start(self, prompt_ids: list[int], soft_prompt: np.ndarray | None = None) -> tuple[int, np.ndarray]:
        """Prefill the prompt once (see `start_logits`). Returns (handle, logits [V] float32 numpy)."""
        handle, logits = self.start_logits(prompt_ids, soft_prompt)
        return handle, logits.cpu().numpy()

    def advance(self, handles: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """handles [B], tokens [B] -> (new handles [B], logits [B, V] float32 numpy). One forward call."""
        kids, logits = self.advance_logits(handles, tokens)
        return kids, logits.cpu().numpy()

    @torch.inference_mode()
    def advance_logits(self, handles: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """handles [B], tokens [B] -> (new handles [B], logits [B, V] float32 on the model's device)."""
        handles = np.asarray(handles, dtype=np.int64).reshape(-1)
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        B = len(handles)
        if B == 0:
            return np.zeros(0, dtype=np.int64), torch.zeros((0, self.vocab_size), device=self.device)
        paths = [self._live_path(h) for h in handles.tolist()]
        new_slots = self.pool.alloc(B)
        idx, lens = left_padded(paths, new_slots)
        try:
            logits = self._forward_step(tokens, idx, lens)
        except BaseException:
            self.pool.free(new_slots)
            raise
        self.cost.add(B)
        kids = np.empty(B, dtype=np.int64)
        width = idx.shape[1]
        for i, h in enumerate(handles.tolist()):
            self._refs[h] += 1
            kids[i] = self._new_handle(idx[i, width - 1 - lens[i]:].astype(np.int32), h)
        return kids, logits

    def _forward_step(self, tokens: np.ndarray, idx: np.ndarray, lens: np.ndarray) -> torch.Tensor:
        """One forward of tokens [B] at positions lens [B] over the K/V of idx [B, L+1] -> logits [B, V].
        The new K/V (and last hidden states) land in the pool slots idx[:, -1]."""
        self._step.set(idx)
        lens_t = torch.from_numpy(lens).to(self.device)
        out = self.model(input_ids=torch.from_numpy(tokens).to(self.device)[:, None],
                         attention_mask=self._masks(lens_t, idx.shape[1]), position_ids=lens_t[:, None],
                         cache=self._cache, use_cache=True, output_hidden_states=True)
        self.pool.hidden[self._step.new_slots] = out.hidden_states[-1][:, -1]
        return out.logits[:, -1].float()

    def release(self, handles: np.ndarray) -> None:
        """Drop the caller's reference to each handle; slots go back to the pool once no live
        handle's path uses them (a released handle with live descendants keeps its slots)."""
        for h in np.asarray(handles, dtype=np.int64).reshape(-1).tolist():
            if not self._released[h]:
                self._released[h] = True
                self._unref(h)

    @torch.inference_mode()
    def hidden(self, handles: np.ndarray) -> np.ndarray:
        """Last-layer hidden state at each handle's last position, [B, D] float32."""
        last = [int(self._live_path(h)[-1]) for h in np.asarray(handles, dtype=np.int64).reshape(-1).tolist()]
        return self.pool.hidden[torch.tensor(last, dtype=torch.long, device=self.device)].float().cpu().numpy()

    def host_kv_bytes(self) -> int:
        """Bytes of the slot pool (keys, values and last hidden state per slot) when it is on the host."""
        if self.pool is None or self.pool.hidden.device.type != "cpu":
            return 0
        return sum(t.nbytes for t in (*self.pool.keys, *self.pool.values, self.pool.hidden))

    def depth(self, handle: int) -> int:
        """Positions in the handle's prefix (prompt included)."""
        return len(self._live_path(int(handle)))

    # ------------------------------------------------------------- internals

    def _ensure_pool(self, cache: DynamicCache, hidden: torch.Tensor) -> None:
        if self.pool is not None:
            return
        shapes = {tuple(cl.keys.shape[1:2] + cl.keys.shape[3:]) for cl in cache.layers}
        if len(shapes) != 1:
            raise SDTError(f"HFBackbone needs the same K/V shape in every layer, got {sorted(shapes)}")
        (kv_heads, head_dim), = shapes
        self.pool = KVPool(len(cache.layers), kv_heads, head_dim, hidden.shape[-1],
                           self.dtype, self.device, self._pool_capacity)
        self._step = _Step(self.pool)
        self._cache = DynamicCache()
        self._cache.layers = [_PoolLayer(self._step, i) for i in range(len(cache.layers))]

    def _masks(self, lens: torch.Tensor, width: int) -> torch.Tensor | dict[str, torch.Tensor]:
        """One mask, or one per layer type for models mixing full and sliding-window layers."""
        if self._layer_types is None:
            return step_mask(lens, width, self.dtype)
        window = int(self.config.sliding_window)
        return {t: step_mask(lens, width, self.dtype, window if t == "sliding_attention" else None)
                for t in set(self._layer_types)}

    def _new_handle(self, path: np.ndarray, parent: int) -> int:
        self._path.append(path)
        self._parent.append(parent)
        self._refs.append(1)
        self._released.append(False)
        return len(self._path) - 1

    def _live_path(self, h: int) -> np.ndarray:
        if not 0 <= h < len(self._path) or self._released[h]:
            raise ValueError(f"handle {h} is unknown or was released")
        return self._path[h]

    def _unref(self, h: int) -> None:
        """Drop one reference to h; free its own slots when none is left, then walk up."""
        while h >= 0:
            self._refs[h] -= 1
            if self._refs[h] > 0:
                return
            path, parent = self._path[h], self._parent[h]
            self.pool.free((path if parent < 0 else path[-1:]).astype(np.int64))
            self._path[h] = None
            h = parent

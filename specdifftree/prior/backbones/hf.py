"""transformers backend: any causal LM as a `Backbone`, its KV cache shaped like the search tree.

Every handle owns the K/V of the positions it added (the prompt for a root handle, one token for
an advanced one) in a `KVPool` of slots (`kv_pool.py`), and keeps the slot path from its root. `advance` on B
handles runs ONE forward over the B new tokens:

    path slots [B, <=L] --left-pad--> idx [B, L+1] (last column: the new slots)
    attention_mask [B, 1, 1, L+1] (padding masked), position_ids [B, 1] = each row's true depth
    per layer, inside the cache's `update` (`hf_cache.py`): the new K/V go into the pool, then one gather
    pool[idx] -> K, V [B, kv_heads, L+1, head_dim] (views of a buffer reused by every layer)

so no prefix is ever run twice, and `release` returns slots to a free list (reference counts:
a slot is freed when neither its handle nor any live descendant needs it).

On models whose layers are all full attention (Llama, Qwen), `advance` runs in cascade mode
(`hf_cascade.py`): the rows' prompts are read once per root handle and only the suffixes after them
are gathered per row, so a forward of B rows over a prompt of P positions reads about P + B * (depth
past the prompt) cached positions per layer instead of B * P (`cascade=False` turns it off).

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

from specdifftree.errors import SDTError
from specdifftree.prior.backbones.base import Backbone, Placement, as_segments, is_embedding
from specdifftree.prior.backbones import hf_cascade
from specdifftree.prior.backbones.hf_cache import PoolStep, pool_cache, step_mask
from specdifftree.prior.backbones.kv_pool import PAD_SLOT, KVPool, left_padded
from specdifftree.prior.base import Cost

_ATTENTION_TYPES = ("full_attention", "sliding_attention")


class HFBackbone(Backbone):
    """A transformers causal LM behind the `Backbone` interface, prefixes shared through a `KVPool`.

    HFBackbone(model, tokenizer) wraps loaded objects; `HFBackbone.from_pretrained(path_or_id)`
    loads both (float32, eval). Attributes: vocab_size, eos_id, cost, pool (None before `start`),
    cascade (whether `advance` shares each prompt's attention among its rows; module docstring).
    """

    def __init__(self, model, tokenizer, pool_capacity: int = 1024, cascade: bool = True):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = model.config.get_text_config(decoder=True)
        impl = getattr(model.config, "_attn_implementation", "sdpa")
        if impl not in ("eager", "sdpa"):
            raise SDTError(f"attention implementation '{impl}' is not supported by HFBackbone; "
                           "load the model with attn_implementation='sdpa' (or 'eager')")
        self._layer_types = self._check_layer_types()
        self._attn_impl = impl
        self.cascade = bool(cascade) and self._layer_types is None \
            and getattr(self.config, "attn_logit_softcapping", None) is None
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        out = model.get_output_embeddings()
        self.vocab_size = int(out.weight.shape[0]) if out is not None else int(self.config.vocab_size)
        self.eos_id = self._eos_id()
        self.max_positions = getattr(self.config, "max_position_embeddings", None)
        self.cost = Cost()
        self._weights_sha256: str | None = None  # of the tensors, for a model without weights files
        self.pool: KVPool | None = None
        self._pool_capacity = pool_capacity
        self._step: PoolStep | None = None
        self._cache: DynamicCache | None = None
        self._keep_last = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._token_strings: list[str] | None = None
        # per handle: slot path from its root (int32, None once freed), parent (-1: root),
        # references (the caller's own + one per live child), released by the caller
        self._path: list[np.ndarray | None] = []
        self._root: list[int] = []  # the root handle (prefilled prompt) each handle descends from
        self._parent: list[int] = []
        self._refs: list[int] = []
        self._released: list[bool] = []

    @classmethod
    def from_pretrained(cls, path_or_id: str, placement: Placement | None = None, **model_kwargs) -> "HFBackbone":
        """Load model and tokenizer from a local folder (or a hub id, when a hub is reachable), on the
        device and in the dtype of `placement` (default: auto, see `Placement`)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from specdifftree.progress import quiet_model_loading

        placement = (placement or Placement()).validate()
        device = placement.torch_device()
        dtype = placement.torch_dtype(device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path_or_id)
            with quiet_model_loading():
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
    def start(self, segments) -> tuple[int, torch.Tensor]:
        """Prefill once with a plain DynamicCache, then move its K/V into fresh pool slots owned by
        the new root handle. Returns (handle, logits [V] float32 on the model's device).

        segments: token ids [T], or token-id segments [T_i] and embedding segments [P_i, D]
        interleaved (OpenTSLM-SP: text, series patches, text, ...; a soft prompt before the
        prompt is [emb, ids]). The handle's prefix holds sum(T_i) + sum(P_i) positions, counted
        once on `cost`, so later tokens continue at that position."""
        segments = as_segments(segments)
        if not any(is_embedding(seg) for seg in segments):
            ids = [int(t) for seg in segments for t in np.asarray(seg).reshape(-1)]
            if not ids:
                raise SDTError("HFBackbone.start needs at least one prompt token (e.g. BOS)")
            return self._prefill({"input_ids": torch.as_tensor(ids, dtype=torch.long, device=self.device)[None]})
        embed = self.model.get_input_embeddings()
        parts = []
        for seg in segments:
            arr = np.asarray(seg)
            if is_embedding(arr):
                if arr.shape[1] != embed.weight.shape[1]:
                    raise SDTError(f"embedding segment of width {arr.shape[1]} does not fit this backbone "
                                   f"(embedding width {embed.weight.shape[1]}): was the projector trained for "
                                   "another backbone?")
                parts.append(torch.as_tensor(arr, dtype=self.dtype, device=self.device))
            elif arr.size:
                parts.append(embed(torch.as_tensor(arr.astype(np.int64).reshape(-1), device=self.device)))
        return self._prefill({"inputs_embeds": torch.cat(parts)[None]})

    def _prefill(self, inputs: dict) -> tuple[int, torch.Tensor]:
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

    @torch.inference_mode()
    def advance(self, handles: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """handles [B], tokens [B] -> (new handles [B], logits [B, V] float32 on the model's device),
        in one forward."""
        handles = np.asarray(handles, dtype=np.int64).reshape(-1)
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        B = len(handles)
        if B == 0:
            return np.zeros(0, dtype=np.int64), torch.zeros((0, self.vocab_size), device=self.device)
        paths = [self._live_path(h) for h in handles.tolist()]
        new_slots = self.pool.alloc(B)
        lens = np.fromiter((len(p) for p in paths), dtype=np.int64, count=B)
        lens_t = torch.from_numpy(lens).to(self.device)
        if self.cascade:
            mask = self._set_cascade(handles, paths, new_slots)
        else:
            idx, _ = left_padded(paths, new_slots)
            self._step.set(idx)
            mask = self._masks(lens_t, idx.shape[1])
        try:
            if self.cascade:  # (per call: several backbones may wrap one model)
                hf_cascade.STEPS[id(self.config)] = self._step
                self.config._attn_implementation = hf_cascade.CASCADE
            out = self.model(input_ids=torch.from_numpy(tokens).to(self.device)[:, None],
                             attention_mask=mask, position_ids=lens_t[:, None],
                             cache=self._cache, use_cache=True, output_hidden_states=True)
        except BaseException:
            self.pool.free(new_slots)
            raise
        finally:
            self._step.cascade = False
            self.config._attn_implementation = self._attn_impl
        self.pool.hidden[self._step.new_slots] = out.hidden_states[-1][:, -1]  # the new slots' hidden states
        self.cost.add(B)
        kids = np.empty(B, dtype=np.int64)
        for i, h in enumerate(handles.tolist()):
            self._refs[h] += 1
            kids[i] = self._new_handle(np.append(paths[i], np.int32(new_slots[i])), h)
        return kids, out.logits[:, -1].float()

    def _set_cascade(self, handles: np.ndarray, paths: list[np.ndarray], new_slots: np.ndarray) -> torch.Tensor:
        """Point the pool step at the rows' suffixes and their roots' prompts (hf_cascade.py); returns
        the suffix mask [B, 1, 1, S+1]."""
        roots = np.fromiter((self._root[h] for h in handles.tolist()), dtype=np.int64, count=len(handles))
        uniq, group = np.unique(roots, return_inverse=True)
        prompts = [self._path[r] for r in uniq.tolist()]
        prompt_lens = np.fromiter((len(p) for p in prompts), dtype=np.int64, count=len(prompts))
        idx, suffix_lens = left_padded([p[prompt_lens[g]:] for p, g in zip(paths, group.tolist())], new_slots)
        self._step.set(idx)
        prefix_idx = np.full((len(prompts), int(prompt_lens.max())), PAD_SLOT, dtype=np.int64)
        for g, p in enumerate(prompts):
            prefix_idx[g, :len(p)] = p
        place = np.zeros(len(handles), dtype=np.int64)        # each row's place among its root's rows
        counts = np.zeros(len(prompts), dtype=np.int64)
        for i, g in enumerate(group.tolist()):
            place[i], counts[g] = counts[g], counts[g] + 1
        per_group = int(counts.max())
        self._step.set_cascade(prefix_idx, prompt_lens, group * per_group + place, per_group)
        return step_mask(torch.from_numpy(suffix_lens).to(self.device), idx.shape[1], torch.float32)

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

    def weights_sha256(self) -> str:
        """The sha256 of the weights files of the directory the model was loaded from (*.safetensors,
        else *.bin); for a model with no such directory (built in memory, a hub id), of its tensors,
        every value, computed once."""
        from specdifftree.files import files_sha256, model_files

        files = model_files(getattr(self.model, "name_or_path", "") or "")
        if files:
            return files_sha256(files)
        if self._weights_sha256 is None:
            from specdifftree.prior.checkpoint import tensors_sha256

            self._weights_sha256 = tensors_sha256(self.model.state_dict().items())
        return self._weights_sha256

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
        self._step = PoolStep(self.pool)
        self._cache = pool_cache(self._step, len(cache.layers))

    def _masks(self, lens: torch.Tensor, width: int) -> torch.Tensor | dict[str, torch.Tensor]:
        """One mask, or one per layer type for models mixing full and sliding-window layers."""
        if self._layer_types is None:
            return step_mask(lens, width, self.dtype)
        window = int(self.config.sliding_window)
        return {t: step_mask(lens, width, self.dtype, window if t == "sliding_attention" else None)
                for t in set(self._layer_types)}

    def _new_handle(self, path: np.ndarray, parent: int) -> int:
        self._root.append(len(self._path) if parent < 0 else self._root[parent])
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

"""A frozen GGUF model through llama.cpp's low-level API, with many prefixes in one KV cache.

    bb = LlamaCppBackbone("model.gguf", n_seq_max=64)
    root, logits = bb.start(bb.tokenize("mean 0.1, std 2\n"))   # logits [V]
    kids, logits = bb.advance(np.array([root, root]), np.array([48, 49]))  # [2], [2, V]

One context with `n_seq_max` = S sequence ids and a unified KV cache. Every live handle owns a
sequence id whose KV cells are exactly its prefix. Advancing handle h by a token takes a free id s,
`llama_memory_seq_cp(h.seq, s)` (under a unified cache this only tags h's cells with s: no copy),
then decodes the token at position depth(h) on s; all rows of `advance` go into one `llama_decode`.

A handle's first fork, when it is its only one in the call, hands the handle's own id to the kid
instead (`_hand_over`): a rollout's chain of tokens then extends one id, with no copy per token.

Ids and cells are scarce, so live handles form an LRU. Before each call, least recently used
handles the call does not advance are evicted while the cells all live paths hold exceed
`cell_budget` (default n_ctx // 8): attention runs over every used cell, so cells kept for prefixes
that may never be advanced again slow every step. Measured on the default backbone (`sdt bench
speed --backend gguf` settings, 3 pairs each): DTS/sampling 0.70 with a budget of 4096 cells, 1.0 at
2048, 1.02-1.18 at 1024, 1.31 at 512; in a 48k-token search forward tokens per new token went from
1.012 (no budget) to 1.020 (512) while tokens/s doubled. With no free id, the least recently used
handle is evicted (`llama_memory_seq_rm`; cells no other id references are freed); it keeps its parent and
token. Advancing it later first gives it its prefix back: the part a live sequence still holds (a
live descendant holds all of it) is tagged onto a new id by `seq_cp` over those positions, and
only the rest is re-decoded. Re-decoded positions are counted in `cost.forward_tokens`, like any
other work.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specdifftree.errors import SDTError
from specdifftree.prior.backbones.base import Backbone, as_segments, is_embedding
from specdifftree.prior.backbones.llamacpp_api import Vocabulary, default_threads, llama, load_model, new_context
from specdifftree.prior.base import Cost

SOFT_PROMPT_NEEDS_HF = ("this prior has a soft-prompt projector, which needs a transformers backbone "
                        "(default or hf:DIR); llama.cpp takes token ids only")


@dataclass
class _Node:
    """A prefix: parent's prefix + `tokens` (a root's tokens are the prompt); seq -1 when evicted."""

    parent: int
    tokens: tuple[int, ...]
    depth: int
    seq: int = -1
    released: bool = False
    n_kids: int = 0


class LlamaCppBackbone(Backbone):
    """Backbone on a GGUF file. n_seq_max: live prefixes at once (<= llama_max_parallel_sequences);
    n_ctx: KV cells shared by all of them; n_threads: None = 1 for small models, else up to 4;
    kv_type: 'f32' (exact, default) or 'f16'; n_gpu_layers: layers offloaded to a GPU (-1: all; a
    CPU-only build of llama.cpp ignores it); cell_budget: KV cells that prefixes outside the current
    call may keep (None: n_ctx // 8; see the module docstring)."""

    def __init__(self, gguf_path: str | Path, n_seq_max: int = 64, n_ctx: int = 4096, n_batch: int = 512,
                 n_threads: int | None = None, kv_type: str = "f32", n_gpu_layers: int = 0,
                 cell_budget: int | None = None):
        self.lib = lib = llama()
        path = Path(gguf_path)
        if not path.is_file():
            raise SDTError(f"GGUF file {path} does not exist")
        if not 2 <= n_seq_max <= lib.llama_max_parallel_sequences():
            raise SDTError(f"n_seq_max must be in [2, {lib.llama_max_parallel_sequences()}], got {n_seq_max}")
        if kv_type not in ("f32", "f16"):
            raise SDTError(f"kv_type must be 'f32' or 'f16', got '{kv_type}'")
        self.path, self.n_seq_max, self.n_batch = path, n_seq_max, n_batch
        self.model = load_model(lib, path, n_gpu_layers)
        try:
            self.ctx = new_context(lib, self.model, n_ctx, n_batch, n_seq_max,
                                   n_threads or default_threads(lib, self.model), kv_type)
        except SDTError:
            lib.llama_model_free(self.model)
            self.model = None
            raise SDTError(f"llama.cpp cannot create a context for {path} (n_ctx {n_ctx}, n_seq_max {n_seq_max})") from None
        self.mem = lib.llama_get_memory(self.ctx)
        self.n_ctx = lib.llama_n_ctx(self.ctx)
        self.max_positions = int(lib.llama_model_n_ctx_train(self.model)) or None  # the GGUF's trained context
        self.vocab = Vocabulary(lib, self.model)
        self.vocab_size, self.eos_id = self.vocab.size, self.vocab.eos_id
        self.batch = lib.llama_batch_init(n_batch, 0, 1)
        self.cost = Cost()
        self._nodes: dict[int, _Node] = {}
        self._lru: OrderedDict[int, None] = OrderedDict()  # handles holding a seq id, oldest first
        self._free = list(range(n_seq_max - 1, -1, -1))
        self._refs: dict[int, int] = {}  # node -> live handles whose path runs through it
        self._cells = 0  # KV cells the live handles' paths hold
        self.cell_budget = self.n_ctx // 8 if cell_budget is None else int(cell_budget)
        self._next = 0

    # --- text ---------------------------------------------------------------------------------

    # --- text ---------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        return self.vocab.tokenize(text)

    def detokenize(self, ids: list[int]) -> str:
        return self.vocab.detokenize(ids)

    def token_strings(self) -> list[str]:
        return self.vocab.token_strings()

    # --- prefixes -----------------------------------------------------------------------------

    def start(self, segments) -> tuple[int, np.ndarray]:
        """Prefill token ids (or token-id segments, in order) on a fresh sequence id. Returns
        (handle, logits [V] float32 numpy). Embedding segments raise SDTError: llama.cpp takes ids only."""
        segments = as_segments(segments)
        if any(is_embedding(seg) for seg in segments):
            raise SDTError(SOFT_PROMPT_NEEDS_HF)
        prompt = tuple(int(t) for seg in segments for t in np.asarray(seg).reshape(-1))
        if not prompt:
            raise SDTError("the llama.cpp backbone needs a non-empty prompt")
        h = self._add_node(-1, prompt, len(prompt))
        self._own(h, self._take_seq({h}))
        rows = [(t, i, self._nodes[h].seq, i == len(prompt) - 1) for i, t in enumerate(prompt)]
        return h, self._decode(rows, {h})[0]

    def advance(self, handles: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """handles [B], tokens [B] -> (new handles [B], logits [B, V] float32 numpy).

        Rows go through llama_decode in chunks of at most n_seq_max - 1 (every new prefix needs its
        own sequence id while it is decoded), normally one chunk."""
        handles, tokens = np.asarray(handles, dtype=np.int64), np.asarray(tokens, dtype=np.int64)
        for h in set(handles.tolist()):
            if h not in self._nodes or self._nodes[h].released:
                raise SDTError(f"unknown or released handle {h}")
        kids = np.empty(len(handles), dtype=np.int64)
        logits = np.empty((len(handles), self.vocab_size), dtype=np.float32)
        step = min(self.n_seq_max - 1, self.n_batch)
        for lo in range(0, len(handles), step):
            sl = slice(lo, lo + step)
            kids[sl], logits[sl] = self._advance_chunk(handles[sl].tolist(), tokens[sl].tolist())
        return kids, logits

    def _advance_chunk(self, parents: list[int], tokens: list[int]) -> tuple[list[int], np.ndarray]:
        """Restore evicted parents, fork one new sequence per row, decode all rows in one call."""
        self._restore(sorted(set(parents), key=lambda h: self._nodes[h].depth))
        self._fit_cells(len(parents), set(parents))
        last = {h: i for i, h in enumerate(parents)}
        pinned = set(parents)  # a parent stays pinned until its last fork, a kid until decoded
        kids, rows = [], []
        for i, (h, t) in enumerate(zip(parents, tokens)):
            node = self._nodes[h]
            kid = self._add_node(h, (int(t),), node.depth + 1)
            seq_is_parents = last[h] == i and node.parent >= 0 and node.n_kids == 1
            if seq_is_parents:
                seq = self._hand_over(h)  # its first and only fork: the kid takes its sequence id
            else:
                self._touch(h)
                seq = self._take_seq(pinned)
                self.lib.llama_memory_seq_cp(self.mem, node.seq, seq, -1, -1)
                if last[h] == i:
                    pinned.discard(h)
            self._own(kid, seq, extends=seq_is_parents)
            pinned.add(kid)
            kids.append(kid)
            rows.append((int(t), node.depth, seq, True))
        return kids, self._decode(rows, set(kids))

    def _hand_over(self, h: int) -> int:
        """h's sequence id, which holds exactly h's prefix, given up for h's kid to extend: h becomes
        evicted, but its kid holds its whole prefix, so advancing h again costs one `seq_cp` and no
        model work (`_restore`). A rollout's chain of single forks thus needs no copy or removal per
        token, and keeps one id, not one per token."""
        node = self._nodes[h]
        seq, node.seq = node.seq, -1
        del self._lru[h]
        return seq

    def _restore(self, handles: list[int]) -> None:
        """Give each evicted handle its prefix back. The longest part of it that a live sequence
        still holds (any live handle whose path runs through it) is tagged onto a new sequence id
        by `seq_cp` over those positions, at no model cost; only the rest is re-decoded (and
        counted). Handles whose missing parts overlap wait for a later round, so that shared work
        is done once and then copied."""
        waiting = sorted({h for h in handles if self._nodes[h].seq < 0}, key=lambda h: self._nodes[h].depth)
        while waiting:
            holder = self._holders()
            paths = {h: self._missing_path(h, holder) for h in waiting}
            now, claimed = [], set()
            for h in waiting:
                if claimed.isdisjoint(paths[h][0]):
                    now.append(h)
                claimed.update(paths[h][0])
            rows, later = [], [g for g in waiting if g not in now]
            for k, h in enumerate(now):
                path, base, src = paths[h]
                # a source stays pinned until its copy is made (ids may be as few as the call's rows)
                pinned = set(handles) | {paths[g][2] for g in now[k:] + later if paths[g][2] >= 0}
                seq = self._take_seq(pinned)
                pos = self._nodes[base].depth if base >= 0 else 0
                if src >= 0:
                    self.lib.llama_memory_seq_cp(self.mem, self._nodes[src].seq, seq, 0, pos)
                toks = [t for p in reversed(path) for t in self._nodes[p].tokens]
                rows += [(t, pos + k, seq, False) for k, t in enumerate(toks)]
                self._own(h, seq)
            self._decode(rows, set(handles))
            waiting = later

    def _holders(self) -> dict[int, int]:
        """node -> a live handle whose prefix runs through it, for every node on a live handle's path."""
        holder: dict[int, int] = {}
        for live in self._lru:
            n = live
            while n >= 0 and n not in holder:
                holder[n] = live
                n = self._nodes[n].parent
        return holder

    def _missing_path(self, h: int, holder: dict[int, int]) -> tuple[list[int], int, int]:
        """(nodes from h up to, excluding, the nearest node a live sequence holds; that node, -1 if
        none; the live handle holding it, -1 if none)."""
        path = []
        while h >= 0 and h not in holder:
            path.append(h)
            h = self._nodes[h].parent
        return path, h, holder.get(h, -1)

    def release(self, handles: np.ndarray) -> None:
        """Free the sequence ids of these handles; their records stay while a descendant needs the path."""
        for h in np.asarray(handles, dtype=np.int64).ravel().tolist():
            node = self._nodes.get(h)
            if node is None or node.released:
                continue
            node.released = True
            if node.seq >= 0:
                self._drop_seq(h)
            self._forget(h)

    def sample(self, prompt_ids: list[int], n_new: int, n_seqs: int, draw) -> np.ndarray:
        """Plain batched ancestral sampling, as llama.cpp's `batched` example does it: the prompt is
        decoded once and shared with n_seqs sequence ids (seq_cp), then each step is one llama_decode
        of n_seqs tokens. draw: logits [n_seqs, V] -> tokens [n_seqs]; EOS does not stop a row.
        Returns tokens [n_seqs, n_new]. Uses no handles (evicts some if ids or cells run short);
        cost counted. Needs len(prompt_ids) + n_seqs * n_new <= n_ctx KV cells."""
        prompt = [int(t) for t in prompt_ids]
        if not 1 <= n_seqs <= self.n_seq_max:
            raise SDTError(f"n_seqs must be in [1, {self.n_seq_max}], got {n_seqs}")
        if len(prompt) + n_seqs * n_new > self.n_ctx:
            raise SDTError(f"{n_seqs} sequences of {n_new} tokens after a {len(prompt)}-token prompt need more "
                           f"than n_ctx={self.n_ctx} KV cells; sample fewer tokens per call")
        seqs = [self._take_seq(set()) for _ in range(n_seqs)]
        out = np.zeros((n_seqs, n_new), dtype=np.int64)
        try:
            logits = self._decode([(t, i, seqs[0], i == len(prompt) - 1) for i, t in enumerate(prompt)], set())
            for s in seqs[1:]:
                self.lib.llama_memory_seq_cp(self.mem, seqs[0], s, -1, -1)
            logits = np.repeat(logits, n_seqs, axis=0)
            for step in range(n_new):
                out[:, step] = draw(logits)
                if step + 1 < n_new:
                    logits = self._decode([(int(t), len(prompt) + step, s, True)
                                           for t, s in zip(out[:, step], seqs)], set())
        finally:
            for s in seqs:
                self.lib.llama_memory_seq_rm(self.mem, s, -1, -1)
            self._free += seqs
        return out

    # --- bookkeeping --------------------------------------------------------------------------

    def _add_node(self, parent: int, tokens: tuple[int, ...], depth: int) -> int:
        h, self._next = self._next, self._next + 1
        self._nodes[h] = _Node(parent, tokens, depth)
        if parent >= 0:
            self._nodes[parent].n_kids += 1
        return h

    def _forget(self, h: int) -> None:
        """Delete released records that no live descendant's path runs through."""
        while h >= 0 and self._nodes[h].released and self._nodes[h].n_kids == 0:
            parent = self._nodes.pop(h).parent
            if parent >= 0:
                self._nodes[parent].n_kids -= 1
            h = parent

    def _own(self, h: int, seq: int, extends: bool = False) -> None:
        """h now holds `seq`. extends: seq came from h's parent (`_hand_over`), whose cells it keeps."""
        self._nodes[h].seq = seq
        self._lru[h] = None
        self._hold(h, +1, whole_path=not extends)

    def _hold(self, h: int, delta: int, whole_path: bool = True) -> None:
        """Count a live handle on (or off) the nodes of its path: a node's KV cells are in use while
        some live handle's path runs through it (`cells_in_use`)."""
        n = h
        while n >= 0:
            refs = self._refs.get(n, 0) + delta
            if refs == 0 or refs == delta:  # the node's cells were freed, or came into use
                self._cells += delta * len(self._nodes[n].tokens)
            if refs:
                self._refs[n] = refs
            else:
                del self._refs[n]
            if not whole_path:
                return
            n = self._nodes[n].parent

    def _fit_cells(self, extra: int, pinned: set[int]) -> None:
        """Evict least recently used unpinned handles until `extra` more cells fit the cell budget."""
        while self._cells + extra > self.cell_budget:
            victim = next((h for h in self._lru if h not in pinned), None)
            if victim is None:
                return
            self._drop_seq(victim)

    def _touch(self, h: int) -> None:
        self._lru.move_to_end(h)

    def _take_seq(self, pinned: set[int]) -> int:
        """A free sequence id, evicting the least recently used unpinned handle if none is free."""
        if not self._free:
            victim = next((h for h in self._lru if h not in pinned), None)
            if victim is None:
                raise SDTError(f"all {self.n_seq_max} sequence ids are in use by one batch; raise n_seq_max")
            self._drop_seq(victim)
        return self._free.pop()

    def _drop_seq(self, h: int) -> None:
        """Evict h: remove its sequence id from the cache (cells shared with other ids stay)."""
        node = self._nodes[h]
        self.lib.llama_memory_seq_rm(self.mem, node.seq, -1, -1)
        self._free.append(node.seq)
        node.seq = -1
        del self._lru[h]
        self._hold(h, -1)

    # --- decoding -----------------------------------------------------------------------------

    def _decode(self, rows: list[tuple[int, int, int, bool]], pinned: set[int]) -> np.ndarray:
        """rows: (token, position, seq id, want logits), in order; n_batch rows per llama_decode.
        Returns logits [n wanted, V] float32, counts every row in cost."""
        out = []
        for lo in range(0, len(rows), self.n_batch):
            part = rows[lo:lo + self.n_batch]
            self._fill_batch(part)
            self._decode_batch(pinned)
            self.cost.add(len(part))
            wanted = sum(1 for r in part if r[3])
            if wanted:
                out.append(self._all_logits(wanted))
        return np.concatenate(out) if out else np.empty((0, self.vocab_size), dtype=np.float32)

    def _fill_batch(self, rows: list[tuple[int, int, int, bool]]) -> None:
        b = self.batch
        b.n_tokens = len(rows)
        for i, (tok, pos, seq, want) in enumerate(rows):
            b.token[i], b.pos[i], b.n_seq_id[i] = tok, pos, 1
            b.seq_id[i][0] = seq
            b.logits[i] = want

    def _decode_batch(self, pinned: set[int]) -> None:
        """llama_decode the filled batch; when the KV cache is full, evict unpinned handles and retry."""
        while True:
            ret = self.lib.llama_decode(self.ctx, self.batch)
            if ret == 0:
                return
            spare = [h for h in self._lru if h not in pinned]
            if ret != 1:
                raise SDTError(f"llama_decode failed with code {ret}")
            if not spare:
                raise SDTError(f"the KV cache is full: the prefixes of one batch need more than n_ctx="
                               f"{self.lib.llama_n_ctx(self.ctx)} cells; raise n_ctx")
            for h in spare[: max(1, len(spare) // 2)]:
                self._drop_seq(h)

    def _all_logits(self, n: int) -> np.ndarray:
        """The logits of the last decode's n outputs, in batch order: one copy, [n, V] float32."""
        ptr = self.lib.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(ptr, shape=(n, self.vocab_size)).astype(np.float32, copy=True)

    def weights_sha256(self) -> str:
        """The sha256 of the GGUF file."""
        from specdifftree.files import file_sha256

        return file_sha256(self.path)

    def live_handles(self) -> int:
        """How many handles hold a sequence id now (<= n_seq_max)."""
        return len(self._lru)

    def close(self) -> None:
        """Free the context, batch and model (also done on garbage collection)."""
        if getattr(self, "ctx", None):
            self.lib.llama_batch_free(self.batch)
            self.lib.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            self.lib.llama_model_free(self.model)
            self.model = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

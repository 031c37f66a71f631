"""The interface a frozen LLM backbone offers the prior: token ids in, next-token logits out,
with prefixes addressed by integer handles so that branching never recomputes a prefix.

    handle, logits = bb.start(prompt_ids)          # prefill the prompt once: logits [V]
    handle, logits = bb.start(ids, soft_prompt)    # [P, D] embeddings before the ids (transformers only)
    handle, logits = bb.start_segments([ids, emb, ids2])  # ids and [P, D] embeddings interleaved (transformers)
    kids, logits = bb.advance(handles, tokens)     # one new position per row: [B] -> [B], [B, V]
    bb.release(handles)                            # the caller will not advance these again

A handle may be advanced many times (that is how a tree branches). Backends count their work
on `bb.cost` (forward_tokens = positions actually run through the model, model_calls = forward
invocations), including any recomputation they are forced into (e.g. after evicting a prefix).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from specdifftree.errors import SDTError
from specdifftree.prior.base import Cost


class Backbone(ABC):
    """vocab_size: width of the logits; eos_id: end-of-sequence id; cost: running Cost."""

    vocab_size: int
    eos_id: int
    cost: Cost

    @abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Ids of `text` (no BOS/EOS added)."""

    @abstractmethod
    def detokenize(self, ids: list[int]) -> str:
        """Text of ids (special tokens dropped)."""

    @abstractmethod
    def token_strings(self) -> list[str]:
        """A printable string per id, len == vocab_size (for trees and tables)."""

    @abstractmethod
    def start(self, prompt_ids: list[int], soft_prompt: np.ndarray | None = None) -> tuple[int, np.ndarray]:
        """Prefill the prompt. Returns (handle, logits [V] float32) for the first new token.

        soft_prompt: [P, D] embeddings to place before the prompt's tokens; backends that take
        token ids only raise SDTError."""

    def start_segments(self, segments: list) -> tuple[int, np.ndarray]:
        """Prefill token-id segments ([T_i] lists) and embedding segments ([P_i, D] arrays) in one
        sequence, in order (OpenTSLM-SP's interleaved layout). Token-only backends raise SDTError."""
        raise SDTError(f"{type(self).__name__} takes token ids only; an interleaved soft prompt needs a "
                       "transformers backbone (hf:DIR)")

    @abstractmethod
    def advance(self, handles: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """handles [B], tokens [B] -> (new handles [B], logits [B, V] float32)."""

    def release(self, handles: np.ndarray) -> None:
        """Free the memory of prefixes that will not be advanced again (optional)."""

    def hidden(self, handles: np.ndarray) -> np.ndarray:
        """Last-layer hidden state at each prefix, [B, D] (for flow networks; optional)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose hidden states")

"""The prior protocol every search method runs on.

A prior is an autoregressive model over a fixed vocabulary. Search code never sees
model internals: it holds opaque integer *handles*, one per prefix the prior has
evaluated, and asks the prior to advance a batch of handles by one token each.

    handle, logp = prior.start()                 # logp: [V], the prompt prefilled once
    kids, logp = prior.advance(handles, tokens)  # handles, tokens: [B] -> kids: [B], logp: [B, V]

`advance` runs exactly one new token position per row through the model, so a
child reuses its parent's work (KV cache) and the cost of a prefix is paid once
by whoever holds its handle. Cost is counted on `prior.cost`.

    x = prior.features(handles, prefixes)        # [B, D], for flow networks (S-ADT): no forward pass

The log-probs stay where the prior computes them: numpy on the host (Markov chains, llama.cpp
backbones) or a torch tensor on the model's device (transformers backbones), so that a tree
search moves only the tokens it draws to the host (`search.sampler`, `search.rows`). Code that
reads whole rows on the host copies them with `search.sampler.on_host`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from specdifftree.errors import SDTError


@dataclass
class Cost:
    """Model work, counted honestly.

    forward_tokens: token positions run through the model (prompt prefill included, once per cache).
    model_calls:    forward invocations (one batched `advance` is one call).
    """

    forward_tokens: int = 0
    model_calls: int = 0

    def add(self, tokens: int, calls: int = 1) -> None:
        self.forward_tokens += int(tokens)
        self.model_calls += int(calls)


class Prior(ABC):
    """Batched next-token log-probs over tree states, with cheap branching.

    Attributes:
        vocab:   token strings, `len(vocab) == V`.
        eos_id:  the end-of-sequence token id.
        max_len: at most this many non-EOS tokens are generated; a sequence that
                 reaches it is terminal without EOS.
        cost:    running `Cost` of everything this prior has computed.
    """

    vocab: list[str]
    eos_id: int
    max_len: int
    cost: Cost

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @abstractmethod
    def start(self):
        """Evaluate the prompt. Returns (root handle, next-token log-probs [V]: numpy, or torch on the
        model's device)."""

    @abstractmethod
    def advance(self, handles: np.ndarray, tokens: np.ndarray):
        """Feed `tokens[i]` to the prefix `handles[i]`.

        Args:
            handles: [B] int, prefixes previously returned by `start`/`advance`.
            tokens:  [B] int, non-EOS tokens to append.
        Returns:
            kids: [B] int handles of the extended prefixes (a handle may be advanced many times:
                  branching is free).
            logp: [B, V] float, next-token log-probs after each extended prefix (numpy, or torch
                  on the model's device).
        """

    def release(self, handles: np.ndarray) -> None:
        """The caller no longer needs these handles (frees KV memory where there is any)."""

    def close(self) -> None:
        """Release every handle this prior still holds (a shared backbone gets their KV memory back).
        Call it when a problem is done; the prior must not be used after."""

    def host_kv_bytes(self) -> int:
        """Host bytes of the KV storage that grows with the search tree (see `Backbone.host_kv_bytes`;
        0 for priors without one)."""
        return 0

    def metered(self) -> "Prior":
        """This prior with a cost meter of its own (the model shared): one per search problem."""
        view = copy.copy(self)
        view.cost = Cost()
        return view

    def decode(self, tokens: list[int] | np.ndarray) -> str:
        """Text of a token sequence; EOS and ids outside the vocabulary are dropped."""
        V = len(self.vocab)
        return "".join(self.vocab[t] for t in tokens if 0 <= t < V and t != self.eos_id)

    def describe(self) -> dict:
        """A JSON-able description for run records."""
        return {"kind": type(self).__name__, "vocab_size": self.vocab_size, "max_len": self.max_len}

    def features(self, handles: np.ndarray, prefixes: list[list[int]]) -> np.ndarray:
        """Features of evaluated prefixes for a flow network (S-ADT), [B, D] float32.

        handles: [B] from `start`/`advance`, still held; prefixes: each one's tokens after the prompt.
        Built from work already done: no forward pass and nothing added to `cost`.
        """
        raise SDTError(f"the {type(self).__name__} prior offers no features for a flow network")

    def weights_sha256(self) -> str:
        """The identity of the model behind p(x|c), not of the context: the sha256 of its weights files
        (`files.files_sha256`; a model held in memory only: of its tensors, every value). A search
        buffer or flow network made with one prior is valid exactly for priors with the same
        identity, and run records name it. A prior without weights is named by `describe()`."""
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()

"""The time-series prior: a frozen LLM backbone plus a logit bias computed from the encoded series.

    log p(x_t | x_<t, c) = log_softmax(llm_logits(prompt(c), x_<t) + bias(c))
    bias(c) = LogitBiasHead(mean-pool(TransformerCNNEncoder(z-normalised c)))     [V], once per context

The prompt carries the series' mean and std (OpenTSLM) and, for forecasting, the history written
with the number codec so that the frozen LLM can read it. `TSLMPrior` implements the prior
protocol (`prior/base.py`), so every search method runs on it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from specdifftree.errors import SDTError
from specdifftree.prior.backbones.base import Backbone
from specdifftree.prior.base import Prior


@dataclass
class PriorParts:
    """The trainable parts and where their backbone comes from (saved together in a checkpoint)."""

    encoder: "object"  # TransformerCNNEncoder
    head: "object"  # LogitBiasHead
    backbone_ref: str  # a --prior spec: "default", "hf:DIR", "gguf:FILE"

    @classmethod
    def fresh(cls, vocab_size: int, backbone_ref: str, seed: int = 0) -> "PriorParts":
        """Untrained parts, seeded: the head starts near zero, i.e. near the backbone's own distribution."""
        import torch

        from specdifftree.prior.encoder import EncoderConfig, TransformerCNNEncoder
        from specdifftree.prior.heads import LogitBiasHead

        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        cfg = EncoderConfig()
        parts = cls(TransformerCNNEncoder(cfg).eval(), LogitBiasHead(cfg.width, vocab_size).eval(), backbone_ref)
        torch.random.set_rng_state(gen_state)
        return parts

    def save(self, directory: str | Path) -> Path:
        from specdifftree.prior.checkpoint import parts_config, save_checkpoint

        config = parts_config(self.encoder, self.head, backbone=self.backbone_ref)
        return save_checkpoint(directory, {"encoder": self.encoder, "head": self.head}, config)

    @classmethod
    def load(cls, directory: str | Path) -> "PriorParts":
        from specdifftree.prior.checkpoint import build_from_checkpoint

        encoder, head, _projector, config = build_from_checkpoint(directory)
        ref = config.get("backbone")
        if not isinstance(ref, str):
            raise SDTError(f"prior checkpoint {directory}: config.json names no backbone")
        return cls(encoder, head, ref)

    def bias(self, history: np.ndarray) -> np.ndarray:
        """The logit bias for one context series.  [L] -> [V] float32"""
        import torch

        from specdifftree.prior.encoder import normalize

        with torch.inference_mode():
            x = torch.as_tensor(np.asarray(history, dtype=np.float32))[None]
            z, _, _ = normalize(x)
            h, mask = self.encoder(z)
            return self.head(self.encoder.pool(h, mask))[0].float().numpy()


class TSLMPrior(Prior):
    """Backbone logits + a per-context bias, as log-probs, over the backbone's vocabulary."""

    def __init__(self, backbone: Backbone, prompt: str, max_len: int, bias: Optional[np.ndarray] = None,
                 name: str = "tslm", grammar=None):
        self.backbone = backbone
        self.vocab = backbone.token_strings()
        self.eos_id = int(backbone.eos_id)
        self.max_len = int(max_len)
        self.cost = backbone.cost
        self.name = name
        self.prompt = prompt
        self.prompt_ids = backbone.tokenize(prompt)
        self.grammar = grammar  # ForecastGrammar or None: masks tokens that would break the format
        self._state: dict[int, tuple] = {}
        V = backbone.vocab_size
        self.bias = np.zeros(V, np.float32) if bias is None else np.asarray(bias, np.float32)
        if self.bias.shape != (V,):
            raise SDTError(f"the prior's bias head has {self.bias.shape[0]} outputs but the backbone has {V} tokens")

    def _logp(self, logits: np.ndarray, states: list) -> np.ndarray:
        """[B, V] logits -> [B, V] log-probs with the bias (and the grammar mask) applied."""
        x = logits.astype(np.float32) + self.bias
        if self.grammar is not None:
            x = x + np.stack([self.grammar.mask(s) for s in states])
        m = x.max(axis=-1, keepdims=True)
        return x - (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))

    def start(self) -> tuple[int, np.ndarray]:
        handle, logits = self.backbone.start(self.prompt_ids)
        state = self.grammar.start if self.grammar is not None else None
        self._state[int(handle)] = state
        return handle, self._logp(logits[None], [state])[0]

    def advance(self, handles: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        handles, tokens = np.asarray(handles), np.asarray(tokens)
        kids, logits = self.backbone.advance(handles, tokens)
        states = [None] * len(kids)
        if self.grammar is not None:
            states = [self.grammar.step(self._state[int(h)], int(t)) for h, t in zip(handles, tokens)]
        self._state.update(zip(np.asarray(kids).tolist(), states))
        return kids, self._logp(logits, states)

    def release(self, handles: np.ndarray) -> None:
        for h in np.asarray(handles).tolist():
            self._state.pop(int(h), None)
        self.backbone.release(np.asarray(handles))

    def decode(self, tokens) -> str:
        return self.backbone.detokenize([int(t) for t in tokens if t != self.eos_id])

    def describe(self) -> dict:
        return {"kind": "tslm", "name": self.name, "vocab_size": self.vocab_size, "max_len": self.max_len,
                "prompt_tokens": len(self.prompt_ids)}

"""The time-series prior: a frozen LLM backbone plus a logit bias computed from the encoded series.

    log p(x_t | x_<t, c) = log_softmax(llm_logits(prompt(c), x_<t) + bias(c))
    bias(c) = LogitBiasHead(mean-pool(TransformerCNNEncoder(z-normalised c)))     [V], once per context
    soft(c) = SoftPromptProjector(TransformerCNNEncoder(z-normalised c))         [P, D], optional

With a projector (transformers backbones only), the soft prompt's P embeddings go before the
prompt's token embeddings in the one prefill; the KV cache then holds them, so search cost per
new token is unchanged.

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
from specdifftree.prior.base import Cost, Prior


@dataclass
class PriorParts:
    """The trainable parts and where their backbone comes from (saved together in a checkpoint).

    projector: the soft-prompt projector (transformers backbones only), or None.
    """

    encoder: "object"  # TransformerCNNEncoder
    head: "object"  # LogitBiasHead, or None (a soft-prompt prior without a bias head)
    backbone_ref: str  # a --prior spec: "default", "hf:DIR", "gguf:FILE"
    projector: "object" = None  # SoftPromptProjector or None

    @classmethod
    def fresh(cls, vocab_size: int, backbone_ref: str, seed: int = 0,
              soft_prompt_dim: Optional[int] = None, encoder_config=None) -> "PriorParts":
        """Untrained parts, seeded: the head starts near zero, i.e. near the backbone's own distribution.
        soft_prompt_dim: the backbone's embedding width, to add a soft-prompt projector.
        encoder_config: an EncoderConfig (default: OpenTSLM's sizes)."""
        from specdifftree.machine import seeded
        from specdifftree.prior.encoder import EncoderConfig, TransformerCNNEncoder
        from specdifftree.prior.heads import LogitBiasHead, SoftPromptProjector

        cfg = encoder_config or EncoderConfig()
        with seeded(seed):
            parts = cls(TransformerCNNEncoder(cfg).eval(), LogitBiasHead(cfg.width, vocab_size).eval(), backbone_ref)
            if soft_prompt_dim is not None:
                parts.projector = SoftPromptProjector(cfg.width, soft_prompt_dim).eval()
        return parts

    def save(self, directory: str | Path) -> Path:
        from specdifftree.prior.checkpoint import parts_config, save_checkpoint

        modules = {name: m for name, m in (("encoder", self.encoder), ("head", self.head),
                                            ("projector", self.projector)) if m is not None}
        config = parts_config(self.encoder, self.head, self.projector, backbone=self.backbone_ref)
        return save_checkpoint(directory, modules, config)

    @classmethod
    def load(cls, directory: str | Path) -> "PriorParts":
        from specdifftree.prior.checkpoint import build_from_checkpoint

        encoder, head, projector, config = build_from_checkpoint(directory)
        ref = config.get("backbone")
        if not isinstance(ref, str):
            raise SDTError(f"prior checkpoint {directory}: config.json names no backbone")
        return cls(encoder, head, ref, projector)

    def to(self, device) -> "PriorParts":
        """Move the encoder, head and projector to `device` (the backbone's), in place; float32 kept."""
        for module in (self.encoder, self.head, self.projector):
            if module is not None:
                module.to(device)
        return self

    @property
    def device(self):
        return next(self.encoder.parameters()).device

    def encode(self, series, mask=None):
        """Z-normalise each series and encode it.  series, mask: [B, L] -> h [B, P, width], patch_mask [B, P]"""
        from specdifftree.prior.encoder import normalize

        z, _, _ = normalize(series, mask)
        return self.encoder(z, mask)

    def soft_prompt(self, series, mask=None):
        """Soft-prompt embeddings of a series batch (what the curriculum trainer calls; differentiable).

        series, mask: [B, L] (mask True = valid point; None = all valid) ->
        (embeds [B, P, D], patch_mask [B, P] bool), D = the backbone's embedding width. Pass both to
        `train.soft_prompt.prepend_soft_prompt(model, input_ids, embeds, patch_mask, attention_mask)`.
        """
        if self.projector is None:
            raise SDTError("this prior has no soft-prompt projector (create it with soft_prompt_dim=...)")
        h, patch_mask = self.encode(series, mask)
        return self.projector(h), patch_mask

    def embed(self, history: np.ndarray) -> np.ndarray:
        """The encoded series: the mean-pooled encoder output for one context.  [L] -> [width] float32"""
        import torch

        with torch.inference_mode():
            h, mask = self.encode(_one_series(history, self.device))
            return self.encoder.pool(h, mask)[0].float().cpu().numpy()

    def bias(self, history: np.ndarray, embedding: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
        """The logit bias for one context series.  [L] -> [V] float32 (None without a head).
        embedding: `embed(history)` when the caller has it already (the encoder then does not run)."""
        import torch

        if self.head is None:
            return None
        embedding = self.embed(history) if embedding is None else embedding
        with torch.inference_mode():
            return self.head(torch.as_tensor(embedding, device=self.device)[None])[0].float().cpu().numpy()

    def weights_sha256(self) -> str:
        """The sha256 of the weights.safetensors these parts save as (`save`), whether they were
        loaded from one or never saved (hashes every weight)."""
        from specdifftree.prior.checkpoint import checkpoint_sha256

        return checkpoint_sha256({name: m for name, m in (("encoder", self.encoder), ("head", self.head),
                                                           ("projector", self.projector)) if m is not None})

    def soft_prompt_for(self, history: np.ndarray) -> Optional[np.ndarray]:
        """The soft prompt of one context series, [P, D] float32, or None without a projector."""
        import torch

        if self.projector is None:
            return None
        with torch.inference_mode():
            embeds, _ = self.soft_prompt(_one_series(history, self.device))
            return embeds[0].float().cpu().numpy()


def _log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32, in place.  [B, V] -> [B, V] (-inf entries stay -inf)."""
    x -= x.max(axis=-1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return x


def _one_series(history: np.ndarray, device=None):
    """[L] -> a float32 torch batch [1, L] on `device`."""
    import torch

    return torch.as_tensor(np.asarray(history, dtype=np.float32), device=device)[None]


def check_positions(backbone: Backbone, n_prompt: int, max_len: int, grammar=None) -> None:
    """SDTError when the prompt (n_prompt positions) plus the longest answer (max_len tokens) runs past
    the positions the backbone was trained on (`max_positions`): it has never seen them, so the query
    is refused before any forward, naming what to shorten."""
    limit = getattr(backbone, "max_positions", None)
    if not limit or n_prompt + max_len <= limit:
        return
    horizon = getattr(grammar, "horizon", None)
    if n_prompt >= limit:
        shorten = "shorten the history (--context-length) or the prompt"
    elif horizon:
        fit = (limit - n_prompt) * horizon // max_len
        shorten = (f"shorten --horizon {horizon} (at most {fit} values fit after this prompt) "
                   "or the history (--context-length)")
    else:
        shorten = "shorten the prompt or the answer's length"
    raise SDTError(f"the prompt ({n_prompt} positions) plus the answer (up to {max_len} tokens) need "
                   f"{n_prompt + max_len} positions, but the backbone was trained on {limit}: {shorten}")


class TSLMPrior(Prior):
    """Backbone logits + a per-context bias, as log-probs, over the backbone's vocabulary."""

    def __init__(self, backbone: Backbone, prompt: str, max_len: int, bias: Optional[np.ndarray] = None,
                 name: str = "tslm", grammar=None, soft_prompt: Optional[np.ndarray] = None,
                 series_features: Optional[np.ndarray] = None, parts_id: str = "",
                 segments: Optional[list] = None):
        self.backbone = backbone
        self.vocab = backbone.token_strings()
        self.eos_id = int(backbone.eos_id)
        self.max_len = int(max_len)
        self.cost = Cost()  # this prior's own work; the backbone's counter is shared by all its priors
        self.name = name
        self.prompt = prompt
        # segments: token-id lists and [P, D] embedding arrays prefilled in order (OpenTSLM-SP), in place
        # of prompt + soft_prompt; `prompt` is then only the text for records
        self.segments = segments
        self.prompt_ids = (backbone.tokenize(prompt) if segments is None else
                           [int(t) for seg in segments if np.asarray(seg).ndim == 1 for t in seg])
        self.grammar = grammar  # ForecastGrammar or None: masks tokens that would break the format
        self.soft_prompt = soft_prompt  # [P, D] embeddings before the prompt (transformers backbones), or None
        self.series_features = series_features  # [W] the encoded series (PriorParts.embed), for flow networks
        self.parts_id = parts_id  # the trained parts' weights sha256 (PriorParts.weights_sha256)
        self._state: dict[int, tuple] = {}
        self._device_rows: dict = {}  # "bias" and grammar states -> [V] tensors on the model's device
        V = backbone.vocab_size
        self.bias = np.zeros(V, np.float32) if bias is None else np.asarray(bias, np.float32)
        if self.bias.shape != (V,):
            raise SDTError(f"the prior's bias head has {self.bias.shape[0]} outputs but the backbone has {V} tokens")
        embedded = sum(len(seg) for seg in [soft_prompt, *(segments or [])] if seg is not None and np.ndim(seg) == 2)
        check_positions(backbone, len(self.prompt_ids) + embedded, self.max_len, grammar)

    @classmethod
    def for_forecast(cls, backbone: Backbone, parts: PriorParts, context, name: str = "tslm",
                     parts_id: Optional[str] = None) -> "TSLMPrior":
        """The prior of one forecasting context (data.context.Context with series and horizon): the
        history written in the prompt, the grammar for exactly `horizon` numbers, and the bias (and
        soft prompt) the trained parts compute from the series. parts_id: `parts.weights_sha256()`
        when the caller has it (it hashes every weight)."""
        from specdifftree.data.prompts import forecast_prompt
        from specdifftree.prior.constraint import ForecastGrammar

        history, horizon, codec = context.series, int(context.horizon), context.codec
        grammar = ForecastGrammar(backbone.token_strings(), backbone.eos_id, horizon, sep=codec.sep)
        embedding = parts.embed(history)  # the encoder runs once per context
        return cls(backbone, forecast_prompt(history, horizon, codec), grammar.max_tokens(),
                   parts.bias(history, embedding), name=name, grammar=grammar, soft_prompt=parts.soft_prompt_for(history),
                   series_features=embedding, parts_id=parts_id or parts.weights_sha256())

    def _metered(self, fn, *args, **kwargs):
        """Call the backbone and charge what it ran to this prior's meter."""
        before = (self.backbone.cost.forward_tokens, self.backbone.cost.model_calls)
        try:
            return fn(*args, **kwargs)
        finally:
            self.cost.add(self.backbone.cost.forward_tokens - before[0], self.backbone.cost.model_calls - before[1])

    def metered(self) -> "TSLMPrior":
        raise SDTError("a TSLMPrior already has its own meter: build one per context (TSLMPrior.for_forecast)")

    def _logp(self, logits, states: list):
        """[B, V] float32 logits where the backbone keeps them (numpy on the host, or torch on the
        model's device) -> [B, V] log-probs there, with the bias (and the grammar mask) applied:
        nothing [V]-wide crosses between host and device."""
        if isinstance(logits, np.ndarray):
            x = logits + self.bias
            if self.grammar is not None:
                x += np.stack([self.grammar.mask(s) for s in states])
            return _log_softmax(x)
        import torch

        x = logits + self._on_device("bias", self.bias, logits.device)
        if self.grammar is not None:
            key = getattr(self.grammar, "mask_key", None) or (lambda s: s)  # states that share a mask share a row
            x = x + torch.stack([self._on_device(key(s), self.grammar.mask(s), logits.device) for s in states])
        return torch.log_softmax(x, dim=-1)

    def _on_device(self, key, row: np.ndarray, device):
        """A [V] float32 host row as a tensor on `device`, moved once (bias, grammar masks per state)."""
        import torch

        if key not in self._device_rows:
            self._device_rows[key] = torch.as_tensor(row, dtype=torch.float32, device=device)
        return self._device_rows[key]

    def start(self):
        """(root handle, log-probs [V] float32 where the backbone keeps logits: numpy, or torch on its device)."""
        if self.segments is not None:  # OpenTSLM-SP's layout: text and series patches interleaved, one prefill
            segments = self.segments
        else:
            segments = self.prompt_ids if self.soft_prompt is None else [self.soft_prompt, self.prompt_ids]
        handle, logits = self._metered(self.backbone.start, segments)
        state = self.grammar.start if self.grammar is not None else None
        self._state[int(handle)] = state
        return handle, self._logp(logits[None], [state])[0]

    def advance(self, handles: np.ndarray, tokens: np.ndarray):
        """(kids [B], log-probs [B, V] float32 where the backbone keeps logits: numpy, or torch on its device)."""
        handles, tokens = np.asarray(handles), np.asarray(tokens)
        kids, logits = self._metered(self.backbone.advance, handles, tokens)
        states = [None] * len(kids)
        if self.grammar is not None:
            states = [self.grammar.step(self._state[int(h)], int(t)) for h, t in zip(handles, tokens)]
        self._state.update(zip(np.asarray(kids).tolist(), states))
        return kids, self._logp(logits, states)

    def release(self, handles: np.ndarray) -> None:
        for h in np.asarray(handles).tolist():
            self._state.pop(int(h), None)
        self._metered(self.backbone.release, np.asarray(handles))

    def host_kv_bytes(self) -> int:
        return self.backbone.host_kv_bytes()

    def close(self) -> None:
        if self._state:
            self.release(np.fromiter(self._state, dtype=np.int64))

    def decode(self, tokens) -> str:
        return self.backbone.detokenize([int(t) for t in tokens if t != self.eos_id])

    def features(self, handles: np.ndarray, prefixes: list[list[int]]) -> np.ndarray:
        """[B, D + W + 1]: the backbone's last hidden state at each prefix (read from its cache: no
        forward pass), the encoded series (W, when given) and depth / max_len."""
        try:
            h = np.asarray(self.backbone.hidden(np.asarray(handles)), np.float32)
        except NotImplementedError:
            raise SDTError(f"flow networks read the backbone's hidden states, which {type(self.backbone).__name__} "
                           "does not expose; use a transformers prior (default, hf:DIR)") from None
        cols = [h, np.array([[len(p) / self.max_len] for p in prefixes], np.float32).reshape(len(h), 1)]
        if self.series_features is not None:
            cols.insert(1, np.broadcast_to(self.series_features, (len(h), len(self.series_features))))
        return np.concatenate(cols, axis=1)

    def weights_sha256(self) -> str:
        """The backbone's weights sha256 and the trained parts' (`parts_id`), as one
        (`files.combined_sha256`)."""
        from specdifftree.files import combined_sha256

        return combined_sha256({"backbone": self.backbone.weights_sha256(), "prior": self.parts_id})

    def describe(self) -> dict:
        placement = {k: str(getattr(self.backbone, k)).removeprefix("torch.")  # transformers backbones
                     for k in ("device", "dtype") if hasattr(self.backbone, k)}
        return {"kind": "tslm", "name": self.name, "vocab_size": self.vocab_size, "max_len": self.max_len, **placement,
                "prompt_tokens": len(self.prompt_ids),
                "soft_prompt_tokens": self._soft_positions()}

    def _soft_positions(self) -> int:
        if self.segments is not None:
            return sum(len(seg) for seg in self.segments if np.asarray(seg).ndim == 2)
        return 0 if self.soft_prompt is None else len(self.soft_prompt)

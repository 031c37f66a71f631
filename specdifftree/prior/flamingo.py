"""The OpenTSLM-Flamingo models as priors: `--prior opentslm:CKPT --backbone hf:LLM_DIR`.

    weights = load_opentslm("model_checkpoint.pt")                # prior/flamingo_ckpt.py: FlamingoWeights
    backbone = flamingo_backbone(weights, "LLM_DIR", placement)   # the checkpoint's LLM, cross-attention inside
    prior = flamingo_prior(weights, backbone, UpstreamPrompt(pre, [(text, x), ...], post), max_len)

The model (StanfordBDHG/OpenTSLM `OpenTSLMFlamingo`, on open-flamingo 2.0's helpers):

    series [n, L]  --CNNTokenizer-->  [n, P, W]  --flatten-->  [1, n*P, W]  --Perceiver-->  latents [64, W]
    each decoder layer i (or every N-th, as the checkpoint holds them), before the layer itself:
        x += tanh(attn_gate) * to_out(softmax_masked(to_q(LN(x)) . K_i^T) V_i)    K_i, V_i = to_kv_i(latents)
        x += tanh(ff_gate) * FF(x)

The mask is upstream's `only_attend_immediate_media` with one media per prompt: a position whose
count of `<image>` tokens up to it (`text_time`) is 0 attends to nothing, 1 attends to the latents,
2 or more has every score masked to the same value and so averages all latents uniformly (what
upstream computes for text after a second `<image>`). Tokens generated after the prompt count
the prompt's `<image>` tokens, as upstream's cached-media generation does.

Cost: per context the encoder, perceiver and every layer's cross-attention keys and values run
once (`MediaContext`, one allocation). The LLM's self-attention KV lives in the backbone's slot
pool like any backbone's, so the prompt is prefilled once and shared by every branch of the tree;
per tree node the memory is that KV alone. `forward_tokens` counts the prompt once; the media
work is reported apart (`FlamingoPrior.describe()["media"]`).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from specdifftree.errors import SDTError
from specdifftree.prior.backbones.base import Placement
from specdifftree.prior.backbones.hf import HFBackbone
from specdifftree.prior.model import TSLMPrior
from specdifftree.prior.opentslm_prompt import padded_series

DIM_HEAD = 64  # open-flamingo's head width in the perceiver and the cross-attention (not in the weights)
MEDIA_TOKEN, CHUNK_END, PAD_TOKEN = "<image>", "<|endofchunk|>", "<PAD>"


# ------------------------------------------------------------------------------------ modules


def feed_forward(dim: int, inner: int) -> nn.Sequential:
    """LayerNorm -> Linear -> GELU -> Linear, no biases (keys 0, 1, 3 as upstream)."""
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(),
                         nn.Linear(inner, dim, bias=False))


class CNNTokenizer(nn.Module):
    """Conv1d patches (no bias) + learned positions + LayerNorm, nothing else.  [n, L] -> [n, L/patch, W]"""

    def __init__(self, width: int, patch: int, max_patches: int):
        super().__init__()
        self.patch = patch
        self.patch_embed = nn.Conv1d(1, width, kernel_size=patch, stride=patch, bias=False)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_patches, width))
        self.input_norm = nn.LayerNorm(width)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.patch_embed(z[:, None, :]).transpose(1, 2)
        if h.shape[1] > self.pos_embed.shape[1]:
            raise SDTError(f"a series of {z.shape[1]} points has {h.shape[1]} patches; this encoder takes at most "
                           f"{self.pos_embed.shape[1]} ({self.pos_embed.shape[1] * self.patch} points)")
        return self.input_norm(h + self.pos_embed[:, : h.shape[1]])


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[..., T, heads * d] -> [..., heads, T, d]"""
    return x.unflatten(-1, (heads, -1)).transpose(-3, -2)


class PerceiverAttention(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.heads = inner // DIM_HEAD
        self.norm_media, self.norm_latents = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """x [b, m, D] media, latents [b, n, D] -> [b, n, D]; the latents attend to media and themselves."""
        x, latents = self.norm_media(x), self.norm_latents(latents)
        q = _heads(self.to_q(latents), self.heads) * DIM_HEAD ** -0.5
        k, v = (_heads(t, self.heads) for t in self.to_kv(torch.cat([x, latents], dim=-2)).chunk(2, dim=-1))
        sim = q @ k.transpose(-1, -2)
        attn = (sim - sim.amax(-1, keepdim=True)).softmax(-1)
        return self.to_out((attn @ v).transpose(-3, -2).flatten(-2))


class Perceiver(nn.Module):
    """open-flamingo's PerceiverResampler without frame or media-time embeddings (OpenTSLM has none)."""

    def __init__(self, dim: int, depth: int, latents: int, inner: int, ff_inner: int):
        super().__init__()
        self.latents = nn.Parameter(torch.zeros(latents, dim))
        self.layers = nn.ModuleList(nn.ModuleList([PerceiverAttention(dim, inner), feed_forward(dim, ff_inner)])
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, media: torch.Tensor) -> torch.Tensor:
        """media [b, m, D] (all series' patches in a row) -> latents [b, n, D]"""
        lat = self.latents.expand(media.shape[0], -1, -1)
        for attn, ff in self.layers:
            lat = attn(media, lat) + lat
            lat = ff(lat) + lat
        return self.norm(lat)


class GatedCrossAttention(nn.Module):
    """open-flamingo's GatedCrossAttentionBlock: `attn` (norm, to_q, to_kv, to_out), `attn_gate`,
    `ff`, `ff_gate`, with the media keys and values computed apart (`media_kv`)."""

    def __init__(self, dim: int, dim_media: int, inner: int, ff_inner: int):
        super().__init__()
        self.heads = inner // DIM_HEAD
        self.attn = nn.Module()
        self.attn.norm = nn.LayerNorm(dim)
        self.attn.to_q = nn.Linear(dim, inner, bias=False)
        self.attn.to_kv = nn.Linear(dim_media, 2 * inner, bias=False)
        self.attn.to_out = nn.Linear(inner, dim, bias=False)
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.ff = feed_forward(dim, ff_inner)
        self.ff_gate = nn.Parameter(torch.zeros(1))

    def media_kv(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [n, D_media] -> [2, heads, n, d]: this layer's keys and values of one context."""
        return torch.stack([_heads(t, self.heads) for t in self.attn.to_kv(latents).chunk(2, dim=-1)])

    def forward(self, x: torch.Tensor, text_time: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """x [B, T, D]; text_time [B or 1, T]: each position's count of <image> tokens; kv from `media_kv`."""
        q = _heads(self.attn.to_q(self.attn.norm(x)), self.heads) * DIM_HEAD ** -0.5  # [B, h, T, d]
        sim = q @ kv[0].transpose(-1, -2)  # [B, h, T, n]
        sees = (text_time == 1)[:, None, :, None]  # one media per prompt: media time 1
        sim = sim.masked_fill(~sees, -torch.finfo(sim.dtype).max)
        attn = (sim - sim.amax(-1, keepdim=True)).softmax(-1)
        attn = attn.masked_fill((text_time == 0)[:, None, :, None], 0.0)
        x = x + self.attn.to_out((attn @ kv[1]).transpose(1, 2).flatten(-2)) * self.attn_gate.tanh()
        return x + self.ff(x) * self.ff_gate.tanh()


# ------------------------------------------------------------------------------------ media per context


class MediaHolder:
    """The context whose media the Flamingo layers of one backbone read now (set by FlamingoPrior)."""

    def __init__(self):
        self.context: MediaContext | None = None
        self.prefill = False

    @contextlib.contextmanager
    def using(self, context: "MediaContext", prefill: bool):
        saved = (self.context, self.prefill)
        self.context, self.prefill = context, prefill
        try:
            yield
        finally:
            self.context, self.prefill = saved


class FlamingoLayer(nn.Module):
    """A decoder layer with its gated cross-attention (or None) before it, as upstream's FlamingoLayer."""

    def __init__(self, decoder_layer: nn.Module, xattn: GatedCrossAttention | None, slot: int, holder: MediaHolder):
        super().__init__()
        self.decoder_layer, self.xattn, self.slot = decoder_layer, xattn, slot
        self._holder = holder

    @property
    def attention_type(self):
        return getattr(self.decoder_layer, "attention_type", None)

    def forward(self, hidden_states, *args, **kwargs):
        if self.xattn is not None:
            ctx = self._holder.context
            if ctx is None:
                raise SDTError("a Flamingo layer ran without its media: run the model through its FlamingoPrior")
            time = ctx.prompt_time if self._holder.prefill else ctx.decode_time
            hidden_states = self.xattn(hidden_states, time, ctx.kv[self.slot].to(hidden_states.dtype))
        return self.decoder_layer(hidden_states, *args, **kwargs)


@dataclass
class MediaContext:
    """One prompt's media, computed once: kv [X, 2, heads, n, d] (X cross-attention layers, one
    allocation), prompt_time [1, T] (each prompt position's <image> count) and decode_time [1, 1]
    (the prompt's count, for every generated token)."""

    kv: torch.Tensor
    prompt_time: torch.Tensor
    decode_time: torch.Tensor
    series: int
    patches: int
    latents: int
    pooled: np.ndarray  # [W] mean of the latents: the encoded series, for flow networks

    def describe(self) -> dict:
        return {"series": self.series, "patches": self.patches, "latents": self.latents,
                "xattn_layers": int(self.kv.shape[0]), "kv_bytes": int(self.kv.nbytes)}


# ------------------------------------------------------------------------------------ backbone


def add_flamingo_tokens(tokenizer) -> None:
    """The tokens upstream adds before resizing the embeddings: <|endofchunk|>, <image>, and <PAD>
    when the tokenizer has no pad token."""
    tokenizer.add_special_tokens({"additional_special_tokens": [CHUNK_END, MEDIA_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})


def flamingo_backbone(weights, llm_dir: str, placement=None):
    """An HFBackbone running the checkpoint's LLM (its own weights, embeddings resized for the added
    tokens) with the cross-attention layers inside, on `placement`. `llm_dir` gives the
    architecture (config.json) and the tokenizer only."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    placement = (placement or Placement()).validate()
    try:
        tokenizer = AutoTokenizer.from_pretrained(llm_dir)
        config = AutoConfig.from_pretrained(llm_dir)
    except Exception as e:  # noqa: BLE001 - transformers raises many types for a bad folder
        raise SDTError(f"could not read the LLM config and tokenizer from '{llm_dir}': "
                       f"{(str(e).strip().splitlines() or [type(e).__name__])[0]}") from None
    add_flamingo_tokens(tokenizer)
    rows = weights.vocab_rows
    if len(tokenizer) != rows:
        raise SDTError(f"{weights.source}: the checkpoint's LLM has {rows} token rows, the tokenizer of {llm_dir} "
                       f"{len(tokenizer)} with Flamingo's tokens: is --backbone the LLM it was trained on?")
    config.get_text_config(decoder=True).vocab_size = rows
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _load_llm(model, weights)
    holder = MediaHolder()
    layers = model.model.layers
    if len(layers) != weights.n_layers:
        raise SDTError(f"{weights.source}: the checkpoint has {weights.n_layers} decoder layers, {llm_dir}'s "
                       f"config {len(layers)}")
    slots = {i: k for k, i in enumerate(sorted(weights.xattn_layers()))}
    device = placement.torch_device()
    dtype = placement.torch_dtype(device)
    # the model moved or cast would change the checkpoint's own modules (its identity, `convert`): then a copy
    own = device.type != "cpu" or dtype != torch.float32
    model.model.layers = nn.ModuleList(
        FlamingoLayer(layer, (copy.deepcopy(weights.xattn[str(i)]) if own else weights.xattn[str(i)]) if i in slots
                      else None, slots.get(i, -1), holder)
        for i, layer in enumerate(layers))
    backbone = FlamingoBackbone(model.to(device=device, dtype=dtype).eval(), tokenizer)
    backbone.media, backbone.flamingo = holder, weights
    return backbone


def _load_llm(model, weights) -> None:
    """The checkpoint's LLM tensors into `model` (assigned, not copied); SDTError on a layout mismatch."""
    tied = bool(getattr(model.config.get_text_config(decoder=True), "tie_word_embeddings", False))
    missing, unexpected = model.load_state_dict(weights.llm, strict=False, assign=True)
    missing = [k for k in missing if not (tied and k == "lm_head.weight")]
    if missing or unexpected:
        raise SDTError(f"{weights.source}: the checkpoint's LLM does not match the --backbone architecture "
                       f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    if tied:
        model.lm_head.weight = model.get_input_embeddings().weight


class FlamingoBackbone(HFBackbone):
    """An HFBackbone whose model holds Flamingo layers (`media`: what they read), identified by the
    checkpoint's weights (`flamingo`: the FlamingoWeights)."""

    media: MediaHolder
    flamingo: object

    def weights_sha256(self) -> str:
        return self.flamingo.weights_sha256()


# ------------------------------------------------------------------------------------ prompt and prior


def prompt_text(prompt) -> str:
    """Upstream's text: pre + " <image> {text} <|endofchunk|>" per series + " {post}"."""
    body = "".join(f" {MEDIA_TOKEN} {text} {CHUNK_END}" for text, _ in prompt.series)
    return prompt.pre_prompt + body + (f" {prompt.post_prompt}" if prompt.post_prompt else "")


def media_context(weights, backbone, prompt, ids: list[int]) -> MediaContext:
    """Encoder, perceiver and every cross-attention layer's keys and values for this prompt, once."""
    device = backbone.device
    media_id = backbone.tokenizer.convert_tokens_to_ids(MEDIA_TOKEN)
    time = torch.as_tensor(np.cumsum(np.asarray(ids) == media_id), dtype=torch.long, device=device)[None]
    xattn = [layer.xattn for layer in backbone.model.model.layers if layer.xattn is not None]
    with torch.inference_mode():
        enc, perceiver = weights.encoder.to(device), weights.perceiver.to(device)
        z = padded_series(prompt.raw_series(), enc.patch).to(device)
        patches = enc(z)  # [n, P, W]
        lat = perceiver(patches.reshape(1, -1, patches.shape[-1]))[0]  # [n_latents, W]
        kv = torch.stack([x.media_kv(lat.to(backbone.dtype)) for x in xattn])
    return MediaContext(kv, time, time[:, -1:], len(z), int(patches.shape[0] * patches.shape[1]), int(lat.shape[0]),
                        lat.mean(0).float().cpu().numpy())


class FlamingoPrior(TSLMPrior):
    """A TSLMPrior whose backbone forwards read this context's media (set around each call)."""

    media: MediaContext

    def start(self):
        with self.backbone.media.using(self.media, prefill=True):
            return super().start()

    def advance(self, handles, tokens):
        with self.backbone.media.using(self.media, prefill=False):
            return super().advance(handles, tokens)

    def describe(self) -> dict:
        return {**super().describe(), "media": self.media.describe()}


def flamingo_prior(weights, backbone, prompt, max_len: int, grammar=None, name: str = "opentslm"):
    """A prior (every search method runs on it) over a `flamingo_backbone` with this prompt: one
    BOS, the text as upstream writes it, then the space upstream puts before every answer
    (`" {answer}"`) where the tokenizer gives it tokens of its own (Llama-3, Gemma before digits),
    prefilled so that the search starts where the trained answer's text starts; the media
    computed once."""
    if getattr(backbone, "media", None) is None:
        raise SDTError("an OpenTSLM-Flamingo prior needs the backbone `flamingo_backbone` builds")
    text = prompt_text(prompt)
    ids = list(backbone.tokenizer(text)["input_ids"])
    spaced = list(backbone.tokenizer(text + " ")["input_ids"])
    ids = spaced if spaced[: len(ids)] == ids else ids
    media = media_context(weights, backbone, prompt, ids)
    prior = FlamingoPrior(backbone, prompt.text(), max_len, bias=None, name=name, grammar=grammar,
                           series_features=media.pooled, parts_id=weights.weights_sha256(), segments=[ids])
    prior.media = media
    return prior

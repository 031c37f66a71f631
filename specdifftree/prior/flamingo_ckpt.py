"""OpenTSLM checkpoints of either variant, told apart by their keys, and the Flamingo one's weights.

    weights = load_opentslm("model_checkpoint.pt")     # OpenTSLMWeights (SP) or FlamingoWeights
    backbone = open_llm(weights, "hf:LLM_DIR", placement, open_backbone)   # prior.sources' opener
    prior = forecast_prior_of(weights, backbone, context)

Upstream writes a Flamingo model in two forms, both read with `torch.load(weights_only=True)`
(`upstream_pickle.read_upstream`: tensors and plain containers only, any other class refused in
one line):
- the trainer's `{"model_state": ..., "optimizer_state", "scheduler_state", "val_loss", "epoch"}`,
  in which every tensor appears under a `model.` and an `llm.` prefix (OpenTSLMFlamingo keeps the
  model under both names); what the published downloads hold;
- `store_to_file`'s `{"llm": state_dict}`, without those prefixes.
Inside, `vision_encoder.*` (CNNTokenizer), `perceiver.*` and `lang_encoder.*`: the LLM, whose decoder
layers sit at `<stack>.layers.N.decoder_layer.*` with their cross-attention at
`<stack>.layers.N.gated_cross_attn_layer.*`, each also registered as `old_decoder_blocks.N.*` and
`gated_cross_attn_layers.N.*`. `split_flamingo` keeps one copy of each tensor under the LLM's own
keys (`model.layers.N.*`) and the cross-attention's by layer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from specdifftree.errors import SDTError
from specdifftree.prior.opentslm import UPSTREAM_FILE, OpenTSLMWeights, attach
from specdifftree.prior.upstream_pickle import read_upstream

FLAMINGO_LAYOUT = "opentslm-flamingo"
_LAYER = re.compile(r"^(?P<stack>.+)\.layers\.(?P<i>\d+)\."
                    r"(?P<part>decoder_layer|gated_cross_attn_layer)\.(?P<rest>.+)$")
_ALIAS = re.compile(r"^(?P<kind>old_decoder_blocks|gated_cross_attn_layers)\.(?P<i>\d+)\.(?P<rest>.+)$")
_NON_PERSISTENT = ("rotary_emb.inv_freq",)  # buffers older transformers saved; rebuilt from the config


def model_state(ckpt: dict):
    """The Flamingo state dict of a loaded checkpoint (trainer or store_to_file form), or None."""
    for key in ("model_state", "llm"):
        state = ckpt.get(key)
        if isinstance(state, dict) and any(str(k).endswith("perceiver.latents") for k in state):
            return state
    return None


def split_flamingo(state: dict, source: str) -> dict:
    """{"encoder", "perceiver": {key: tensor}, "xattn": {layer: {key: tensor}}, "llm": {HF key: tensor}},
    each tensor once: the `model.`/`llm.` (and DDP's `module.`) prefixes stripped, the
    `old_decoder_blocks` / `gated_cross_attn_layers` aliases used only where the layer's own key is absent."""
    if state and all(k.startswith(("model.", "llm.")) for k in state):
        prefix = "model." if any(k.startswith("model.") for k in state) else "llm."
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    state = {k.removeprefix("module."): v for k, v in state.items()}
    out: dict = {"encoder": {}, "perceiver": {}, "xattn": {}, "llm": {}}
    aliases, stack = [], "model"
    for key, t in state.items():
        group, _, rest = key.partition(".")
        if group in ("vision_encoder", "perceiver"):
            out["encoder" if group == "vision_encoder" else "perceiver"][rest] = t
        elif group != "lang_encoder":
            raise SDTError(f"{source}: unexpected key '{key}' in an OpenTSLM-Flamingo checkpoint")
        elif _ALIAS.match(rest):
            aliases.append(_ALIAS.match(rest))
        elif (m := _LAYER.match(rest)) is not None:
            stack = m["stack"]
            if m["part"] == "decoder_layer":
                out["llm"][f"{stack}.layers.{m['i']}.{m['rest']}"] = t
            else:
                out["xattn"].setdefault(int(m["i"]), {})[m["rest"]] = t
        elif not rest.endswith(_NON_PERSISTENT):
            out["llm"][rest] = t
    for m in aliases:  # a layer the wrapper keys lack (never in upstream's own files, but cheap to accept)
        if m["kind"] == "old_decoder_blocks":
            out["llm"].setdefault(f"{stack}.layers.{m['i']}.{m['rest']}", state[f"lang_encoder.{m.string}"])
        else:
            out["xattn"].setdefault(int(m["i"]), {}).setdefault(m["rest"], state[f"lang_encoder.{m.string}"])
    for part in ("encoder", "perceiver", "xattn", "llm"):
        if not out[part]:
            raise SDTError(f"{source}: the checkpoint holds no {part} weights: not an OpenTSLM-Flamingo model")
    return out


@dataclass
class FlamingoWeights:
    """What an OpenTSLM-Flamingo checkpoint holds, in our modules (prior/flamingo.py).

    encoder:   CNNTokenizer; perceiver: Perceiver; xattn: {"N": GatedCrossAttention} per layer that has one
    llm:       the LLM's state dict under its own HF keys (float32, embeddings resized for the added tokens)
    """

    encoder: object
    perceiver: object
    xattn: object  # nn.ModuleDict
    llm: dict
    source: str = ""
    _sha256: str = field(default="", repr=False)

    @property
    def vocab_rows(self) -> int:
        return int(next(t for k, t in self.llm.items() if k.endswith("embed_tokens.weight")).shape[0])

    @property
    def n_layers(self) -> int:
        return len({int(m[1]) for k in self.llm if (m := re.match(r"^.+\.layers\.(\d+)\.", k))})

    def xattn_layers(self) -> list[int]:
        return sorted(int(k) for k in self.xattn)

    @classmethod
    def from_parts(cls, parts: dict, source: str) -> "FlamingoWeights":
        """From `split_flamingo`'s groups; sizes read from the tensors."""
        import torch
        import torch.nn as nn

        from specdifftree.prior.flamingo import CNNTokenizer, GatedCrossAttention, Perceiver

        enc, per = parts["encoder"], parts["perceiver"]
        try:
            conv, pos = enc["patch_embed.weight"], enc["pos_embed"]
            encoder = CNNTokenizer(conv.shape[0], conv.shape[2], pos.shape[1])
            depth = len({k.split(".")[1] for k in per if k.startswith("layers.")})
            perceiver = Perceiver(per["latents"].shape[1], depth, per["latents"].shape[0],
                                  per["layers.0.0.to_q.weight"].shape[0], per["layers.0.1.1.weight"].shape[0])
            xattn = nn.ModuleDict({str(i): GatedCrossAttention(
                sd["attn.to_q.weight"].shape[1], sd["attn.to_kv.weight"].shape[1], sd["attn.to_q.weight"].shape[0],
                sd["ff.1.weight"].shape[0]) for i, sd in parts["xattn"].items()})
        except (KeyError, IndexError, AttributeError) as e:
            raise SDTError(f"{source}: not OpenTSLM-Flamingo's module layout ({e!r})") from None
        _load(encoder, enc, "vision_encoder", source)
        _load(perceiver, per, "perceiver", source)
        _load(xattn, {f"{i}.{k}": t for i, sd in parts["xattn"].items() for k, t in sd.items()},
              "cross-attention", source)
        llm = {k: torch.as_tensor(t).float() for k, t in parts["llm"].items()}
        return cls(encoder.eval(), perceiver.eval(), xattn.eval(), llm, source)

    @classmethod
    def load_converted(cls, directory: Path) -> "FlamingoWeights":
        from specdifftree.prior.checkpoint import load_checkpoint

        state, config = load_checkpoint(directory)
        xattn: dict = {}
        for k, t in state.get("xattn", {}).items():
            i, _, rest = k.partition(".")
            xattn.setdefault(int(i), {})[rest] = t
        parts = {"encoder": state.get("encoder", {}), "perceiver": state.get("perceiver", {}), "xattn": xattn,
                 "llm": state.get("llm", {})}
        weights = cls.from_parts(parts, str(directory))
        weights._sha256 = config["weights_sha256"]  # load_checkpoint verified the file against it
        return weights

    def modules(self) -> dict:
        """What `save` writes, each tensor once (a tied output head is the input embeddings)."""
        embed = next(k for k in self.llm if k.endswith("embed_tokens.weight"))
        head = self.llm.get("lm_head.weight")
        llm = dict(self.llm)
        if head is not None and (head is self.llm[embed] or head.data_ptr() == self.llm[embed].data_ptr()):
            del llm["lm_head.weight"]
        return {"encoder": self.encoder, "perceiver": self.perceiver, "xattn": self.xattn, "llm": llm}

    def weights_sha256(self) -> str:
        """The sha256 of the weights.safetensors `save` writes, so a checkpoint and its conversion
        have one identity (computed once)."""
        if not self._sha256:
            from specdifftree.prior.checkpoint import checkpoint_sha256

            self._sha256 = checkpoint_sha256(self.modules())
        return self._sha256

    def save(self, directory: str | Path, backbone_ref: str, extra: dict | None = None) -> Path:
        """weights.safetensors (encoder, perceiver, xattn.N.*, llm.*) + config.json."""
        from specdifftree.prior.checkpoint import save_checkpoint

        config = {"backbone": backbone_ref, "vocab_size": self.vocab_rows,
                  "opentslm": {"layout": FLAMINGO_LAYOUT, "source": self.source}, **(extra or {})}
        return save_checkpoint(directory, self.modules(), config)


def _load(module, sd: dict, what: str, source: str) -> None:
    import torch

    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    bad = [k for k in set(own) & set(sd) if tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        raise SDTError(f"{source}: {what} does not match OpenTSLM-Flamingo's layout "
                       f"(missing {missing[:3]}, unexpected {unexpected[:3]}, misshapen {bad[:3]})")
    module.load_state_dict({k: torch.as_tensor(t).float() for k, t in sd.items()}, strict=True)


# ------------------------------------------------------------------------------------ either variant


def converted_layout(directory: Path) -> str | None:
    cfg = Path(directory) / "config.json"
    try:
        meta = json.loads(cfg.read_text()).get("opentslm") if cfg.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return meta.get("layout") if isinstance(meta, dict) else None


def load_opentslm(path: str | Path):
    """An OpenTSLM checkpoint of either variant: an upstream `.pt` file (read once, safely), a
    folder holding `model_checkpoint.pt`, or a converted folder. Returns OpenTSLMWeights (SP) or
    FlamingoWeights, told apart by the keys."""
    path = Path(path)
    if path.is_dir() and (path / UPSTREAM_FILE).is_file():
        path = path / UPSTREAM_FILE
    if path.is_dir():
        if converted_layout(path) == FLAMINGO_LAYOUT:
            return FlamingoWeights.load_converted(path)
        return OpenTSLMWeights.load(path)
    ckpt = read_upstream(path)
    state = model_state(ckpt)
    if state is not None:
        return FlamingoWeights.from_parts(split_flamingo(state, str(path)), str(path))
    return OpenTSLMWeights.from_upstream(ckpt, str(path))


def open_llm(weights, ref: str, placement, open_backbone):
    """The backbone a checkpoint runs on: SP -> the LLM `ref` names (opened by `open_backbone`,
    prior.sources') with the LoRA merged in; Flamingo -> the checkpoint's own LLM, architecture and
    tokenizer from `ref` (hf:LLM_DIR)."""
    from specdifftree.prior.spec import parse_prior

    if not isinstance(weights, FlamingoWeights):
        return attach(weights, open_backbone(ref, placement))
    spec = parse_prior(ref)
    if spec.kind != "hf":
        raise SDTError(f"an OpenTSLM-Flamingo prior runs on transformers: give --backbone hf:LLM_DIR, not '{ref}'")
    from specdifftree.prior.flamingo import flamingo_backbone

    return flamingo_backbone(weights, spec.arg, placement)


def forecast_prior_of(weights, backbone, context, name: str = "opentslm"):
    """The prior of one forecasting context for either variant: the upstream layout around our
    forecast prompt (`data.prompts.opentslm_forecast_prompt`), every series of the context
    described and encoded (the forecast one first), the forecast grammar on top."""
    from specdifftree.data.prompts import opentslm_forecast_prompt
    from specdifftree.prior.constraint import ForecastGrammar
    from specdifftree.prior.opentslm import opentslm_prior
    from specdifftree.prior.opentslm_prompt import UpstreamPrompt

    codec, horizon = context.codec, int(context.horizon)
    pre, post = opentslm_forecast_prompt(context.series, horizon, codec)
    grammar = ForecastGrammar(backbone.token_strings(), backbone.eos_id, horizon, sep=codec.sep)
    series = [context.series, *getattr(context, "covariates", ())]
    prompt = UpstreamPrompt.described(pre, series, post)
    if isinstance(weights, FlamingoWeights):
        from specdifftree.prior.flamingo import flamingo_prior

        return flamingo_prior(weights, backbone, prompt, grammar.max_tokens(), grammar=grammar, name=name)
    return opentslm_prior(weights, backbone, prompt, grammar.max_tokens(), grammar=grammar, name=name)


def convert(ckpt: str | Path, out_dir: str | Path, ref: str, open_backbone) -> Path:
    """An OpenTSLM checkpoint of either variant -> our pickle-free checkpoint (safetensors + JSON),
    checked against its LLM `ref` first (`open_llm`)."""
    from specdifftree.prior.spec import absolute_spec

    weights = load_opentslm(ckpt)
    llm = open_llm(weights, ref, None, open_backbone)
    if isinstance(weights, FlamingoWeights):
        return weights.save(out_dir, absolute_spec(ref))
    return weights.save(out_dir, absolute_spec(ref), llm.vocab_size)

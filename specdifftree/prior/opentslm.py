"""The published OpenTSLM-SP models as priors: `--prior opentslm:CKPT --backbone hf:LLM_DIR`.

    weights = OpenTSLMWeights.load("model_checkpoint.pt")         # or an HF download dir, or `sdt convert` output
    backbone = attach(weights, open_backbone("hf:LLM_DIR"))       # LoRA merged: W + (alpha / r) B A
    prior = opentslm_prior(weights, backbone, UpstreamPrompt(pre, [(text, z)], post), max_len)

An upstream checkpoint is one `torch.save` dict (StanfordBDHG/OpenTSLM, `model_checkpoint.pt`):
`encoder_state` (TransformerCNNEncoder, post-norm, no final norm; `pos_embed` [1, P, W]),
`projector_state` (`projector.{0,1}.*`: LayerNorm -> Linear(W -> H) -> GELU), `lora_enabled`, and
from stage 3 on `lora_state` (peft keys `base_model.model.<module>.lora_{A,B}.<adapter>.weight`)
with `lora_config` (a dict of peft `LoraConfig` objects), plus optimizer and scheduler states.

Safe loading: the file is a pickle, read without running any code from it (`upstream_pickle.py`).

The prompt is built as upstream does (`opentslm_prompt.py`): segments [pre_prompt, text_1,
series_1, ..., text_n, series_n, post_prompt, answer prefix], each text tokenized with the
tokenizer's default special tokens (Llama: a BOS per segment), the series z-normalised, padded
with zeros to the longest (a multiple of the patch; padded patches are attended, as upstream),
encoded as one batch and projected, and the answer's BOS after the post-prompt. The
whole sequence is prefilled once (`Backbone.start`), so the patches sit in the KV cache
that every search branch shares, and `forward_tokens` counts them once.
"""

from __future__ import annotations

import json
import re
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from specdifftree.errors import SDTError
from specdifftree.prior.opentslm_prompt import (SERIES_TEXT, UpstreamPrompt, answer_prefix,  # noqa: F401
                                                 padded_series, text_ids)
from specdifftree.prior.upstream_pickle import plain, read_upstream

UPSTREAM_FILE = "model_checkpoint.pt"
LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])\.(?P<adapter>[^.]+)\.weight$")
# the hub model name prefix -> its base LLM (upstream's `load_pretrained` convention)
BASE_LLMS = {"llama-3.2-1b": "meta-llama/Llama-3.2-1B", "llama-3.2-3b": "meta-llama/Llama-3.2-3B",
             "gemma-3-1b-pt": "google/gemma-3-1b-pt", "gemma-3-270m": "google/gemma-3-270m"}


# ------------------------------------------------------------------------------------ weights


@dataclass
class OpenTSLMWeights:
    """What an OpenTSLM-SP checkpoint holds, in our modules.

    encoder:    TransformerCNNEncoder with EncoderConfig.upstream() sizes read from the weights
    projector:  SoftPromptProjector(depth=1), hidden = the LLM's embedding width
    lora:       {module path in the HF model, e.g. "model.layers.0.self_attn.q_proj": (A [r, in], B [out, r])}
    lora_scale: alpha / r (alpha / sqrt(r) with rsLoRA)
    source:     where it was read from, for records
    """

    encoder: "object"
    projector: "object"
    lora: dict = field(default_factory=dict)
    lora_scale: float = 0.0
    lora_config: dict = field(default_factory=dict)
    source: str = ""

    @classmethod
    def load(cls, path: str | Path) -> "OpenTSLMWeights":
        """From an upstream `.pt` file, a folder holding `model_checkpoint.pt` (an HF download), or a
        folder written by `convert` (safetensors + JSON)."""
        path = Path(path)
        if path.is_dir() and (path / UPSTREAM_FILE).is_file():
            path = path / UPSTREAM_FILE
        if path.is_dir():
            return cls._load_converted(path)
        return cls.from_upstream(read_upstream(path), str(path))

    @classmethod
    def from_upstream(cls, ckpt: dict, source: str = "checkpoint") -> "OpenTSLMWeights":
        """From the dict `read_upstream` returns."""
        for key in ("encoder_state", "projector_state"):
            if not isinstance(ckpt.get(key), dict):
                raise SDTError(f"{source}: no '{key}': not an OpenTSLM-SP checkpoint (nor a Flamingo one: "
                               "no perceiver weights)")
        encoder = _upstream_encoder(ckpt["encoder_state"], source)
        projector = _upstream_projector(ckpt["projector_state"], source)
        lora, scale, config = {}, 0.0, {}
        if ckpt.get("lora_enabled") and ckpt.get("lora_state"):
            config = _lora_config(plain(ckpt.get("lora_config")), source)
            lora = _lora_factors(ckpt["lora_state"], config["adapter"], source)
            scale = config["scale"]
        return cls(encoder, projector, lora, scale, config, source)

    @classmethod
    def _load_converted(cls, directory: Path) -> "OpenTSLMWeights":
        from specdifftree.prior.checkpoint import build_modules, load_checkpoint

        state, config = load_checkpoint(directory)
        meta = config.get("opentslm")
        if not isinstance(meta, dict) or not config.get("projector"):
            raise SDTError(f"{directory}: not an OpenTSLM checkpoint converted by `sdt convert opentslm`")
        modules = build_modules(state, config, directory, extra=("lora",))
        lora_t = state.get("lora", {})
        paths = sorted({k.rpartition(".")[0] for k in lora_t})
        try:
            lora = {p: (lora_t[f"{p}.A"], lora_t[f"{p}.B"]) for p in paths}
        except KeyError as e:
            raise SDTError(f"{directory}: LoRA factor {e} missing") from None
        return cls(modules["encoder"], modules["projector"], lora, float(meta.get("lora_scale", 0.0)),
                   meta.get("lora_config", {}), str(directory))

    def save(self, directory: str | Path, backbone_ref: str, vocab_size: int, extra: Optional[dict] = None) -> Path:
        """Our pickle-free checkpoint: `weights.safetensors` (encoder, projector, lora.<module>.{A,B})
        + `config.json` (plus `extra` keys); `--prior DIR` and `--prior opentslm:DIR` load it."""
        from specdifftree.prior.checkpoint import parts_config, save_checkpoint

        config = {**parts_config(self.encoder, None, self.projector, backbone=backbone_ref, vocab_size=vocab_size),
                  "opentslm": {"lora_scale": self.lora_scale, "lora_config": self.lora_config,
                               "source": self.source, "layout": "opentslm-sp"}, **(extra or {})}
        return save_checkpoint(directory, self.modules(), config)

    def modules(self) -> dict:
        """What `save` writes: {"encoder", "projector", and "lora": {"<module>.A" / ".B": tensor}}."""
        lora = {f"{p}.{n}": t for p, (a, b) in self.lora.items() for n, t in (("A", a), ("B", b))}
        return {"encoder": self.encoder, "projector": self.projector} | ({"lora": lora} if lora else {})

    def weights_sha256(self) -> str:
        """The sha256 of the weights.safetensors `save` writes (encoder, projector, LoRA factors),
        computed in memory, so an upstream checkpoint and its conversion have one identity; with
        LoRA factors, combined with the LoRA scale (which lives in the config, not the weights)."""
        from specdifftree.files import combined_sha256
        from specdifftree.prior.checkpoint import checkpoint_sha256

        sha = checkpoint_sha256(self.modules())
        if not self.lora:
            return sha
        return combined_sha256({"weights.safetensors": sha, "lora_scale": repr(self.lora_scale)})


def _upstream_encoder(sd: dict, source: str):
    """Upstream encoder keys -> ours: `encoder.*` is our `transformer.*`; `pos_embed` loses its batch dim."""
    import torch

    from specdifftree.prior.encoder import EncoderConfig, TransformerCNNEncoder

    try:
        conv, pos = sd["patch_embed.weight"], sd["pos_embed"]
        layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")})
        width, patch, ff = conv.shape[0], conv.shape[2], sd["encoder.layers.0.linear1.weight"].shape[0]
    except (KeyError, IndexError, AttributeError, ValueError) as e:
        raise SDTError(f"{source}: encoder_state is not an OpenTSLM TransformerCNNEncoder ({e!r})") from None
    heads = 8  # not in the weights; every published model uses 8
    cfg = EncoderConfig.upstream(patch=patch, width=width, layers=len(layers), heads=heads, ff=ff,
                                 max_patches=pos.shape[-2])
    ours = {("transformer." + k[len("encoder."):] if k.startswith("encoder.") else k): v for k, v in sd.items()}
    ours["pos_embed"] = pos.reshape(pos.shape[-2], pos.shape[-1])
    encoder = TransformerCNNEncoder(cfg)
    _load(encoder, {k: torch.as_tensor(v).float() for k, v in ours.items()}, "encoder_state", source)
    return encoder.eval()


def _upstream_projector(sd: dict, source: str):
    """Upstream `projector.{0,1}.*` (LayerNorm, Linear) -> our `net.{0,1}.*`."""
    import torch

    from specdifftree.prior.heads import SoftPromptProjector

    try:
        hidden, width = sd["projector.1.weight"].shape
    except (KeyError, ValueError, AttributeError) as e:
        raise SDTError(f"{source}: projector_state is not an OpenTSLM MLPProjector ({e!r})") from None
    projector = SoftPromptProjector(width, hidden, depth=1)
    ours = {"net." + k[len("projector."):]: torch.as_tensor(v).float() for k, v in sd.items()}
    _load(projector, ours, "projector_state", source)
    return projector.eval()


def _load(module, sd: dict, what: str, source: str) -> None:
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if missing or unexpected:
        raise SDTError(f"{source}: {what} does not match OpenTSLM's layout "
                       f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for k, t in sd.items():
        if t.shape != own[k].shape:
            raise SDTError(f"{source}: {what} tensor {k} has shape {list(t.shape)}, expected {list(own[k].shape)}")
    module.load_state_dict(sd, strict=True)


def _lora_config(config, source: str) -> dict:
    """The LoRA hyperparameters from a pickled `{adapter: LoraConfig}` (as plain dicts)."""
    if not isinstance(config, dict) or len(config) != 1:
        raise SDTError(f"{source}: lora_config should hold exactly one adapter's LoraConfig")
    (adapter, fields), = config.items()
    if not isinstance(fields, dict) or "r" not in fields or "lora_alpha" not in fields:
        raise SDTError(f"{source}: lora_config['{adapter}'] has no r / lora_alpha")
    for unsupported in ("rank_pattern", "alpha_pattern"):
        if fields.get(unsupported):
            raise SDTError(f"{source}: LoRA with a per-module {unsupported} is not supported")
    if fields.get("use_dora") or fields.get("fan_in_fan_out"):
        raise SDTError(f"{source}: DoRA / fan_in_fan_out LoRA adapters are not supported")
    r, alpha = int(fields["r"]), float(fields["lora_alpha"])
    scale = alpha / (r ** 0.5) if fields.get("use_rslora") else alpha / r
    keep = ("r", "lora_alpha", "use_rslora", "target_modules", "lora_dropout", "bias", "task_type", "peft_type")
    return {"adapter": str(adapter), "scale": scale, **{k: fields.get(k) for k in keep}}


def _lora_factors(state: dict, adapter: str, source: str) -> dict:
    """{module path: (A [r, in], B [out, r])} from peft's `lora_state` keys."""
    import torch

    halves: dict[str, dict[str, object]] = {}
    for key, t in state.items():
        m = LORA_KEY.match(key)
        if m is None or m["adapter"] != adapter:
            raise SDTError(f"{source}: unexpected LoRA key '{key}' (peft's base_model.model.<module>.lora_A.{adapter}.weight)")
        halves.setdefault(m["module"], {})[m["ab"]] = torch.as_tensor(t).float()
    out = {}
    for module, ab in sorted(halves.items()):
        if set(ab) != {"A", "B"} or ab["B"].shape[1] != ab["A"].shape[0]:
            raise SDTError(f"{source}: LoRA factors of {module} are incomplete or mismatched")
        out[module] = (ab["A"], ab["B"])
    return out


# ------------------------------------------------------------------------------------ backbone


_MERGED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # backbone -> weights_sha256 of the LoRA merged in


def attach(weights: OpenTSLMWeights, backbone):
    """Make `backbone` (an HFBackbone) the checkpoint's LLM: check the embedding width and merge
    the LoRA factors into its weights once (W += scale * B @ A). Returns the backbone."""
    import torch

    model = getattr(backbone, "model", None)
    if not hasattr(model, "get_input_embeddings"):  # llama.cpp's model is a C handle
        raise SDTError("an OpenTSLM-SP prior needs a transformers backbone: --backbone hf:LLM_DIR")
    width = model.get_input_embeddings().weight.shape[1]
    if weights.projector.hidden != width:
        raise SDTError(f"{weights.source}: the projector writes {weights.projector.hidden}-wide embeddings but the "
                       f"backbone's are {width}-wide: is --backbone the base LLM this checkpoint was trained on?")
    done = _MERGED.get(backbone)
    if done is not None:
        if done != weights.weights_sha256():
            raise SDTError("this backbone already carries another OpenTSLM checkpoint's LoRA; open it afresh")
        return backbone
    with torch.no_grad():
        for path, (a, b) in weights.lora.items():
            try:
                linear = model.get_submodule(path)
            except AttributeError:
                raise SDTError(f"{weights.source}: LoRA targets {path}, which the backbone does not have") from None
            if tuple(linear.weight.shape) != (b.shape[0], a.shape[1]):
                raise SDTError(f"{weights.source}: LoRA of {path} is {b.shape[0]}x{a.shape[1]}, the backbone's "
                               f"weight {list(linear.weight.shape)}")
            delta = (b.double() @ a.double()) * weights.lora_scale
            linear.weight.add_(delta.to(linear.weight.dtype))
    _MERGED[backbone] = weights.weights_sha256()
    return backbone


def default_backbone_ref(source: str) -> str:
    """The base LLM an upstream checkpoint names by its model-name prefix, as an `hf:` ref, or SDTError."""
    low = source.lower()
    for prefix, llm in BASE_LLMS.items():
        if prefix in low:
            return f"hf:{llm}"
    raise SDTError(f"{source}: give the base LLM with --backbone hf:LLM_DIR (e.g. a local Llama-3.2-1B folder)")


# ------------------------------------------------------------------------------------ prompt and prior


def series_embeddings(encoder, projector, series: list):
    """Projected patch embeddings of a prompt's series, as upstream computes them: all padded to the
    longest (a multiple of the patch) and encoded as one batch, every patch valid (upstream attends
    the zero padding too).  [n series] -> [n, L* / patch, H]"""
    h, _ = encoder(padded_series(series, encoder.config.patch))
    return projector(h)


def segments(encoder, projector, backbone, prompt: UpstreamPrompt) -> list:
    """[ids(pre), ids(text_1), emb(series_1), ..., ids(post), answer prefix]: each text with the
    tokenizer's default special tokens (a BOS each with Llama), each series as [P*, H] float32
    embeddings, then the special tokens upstream's loss puts before the answer (BOS)."""
    import torch

    out = [text_ids(backbone, prompt.pre_prompt)]
    with torch.inference_mode():
        emb = series_embeddings(encoder, projector, prompt.raw_series()).float().numpy() if prompt.series else []
    for (text, _), e in zip(prompt.series, emb):
        out += [text_ids(backbone, text), e]
    prefix = answer_prefix(backbone)
    return out + [text_ids(backbone, prompt.post_prompt)] + ([prefix] if prefix else [])


def opentslm_prior(weights: OpenTSLMWeights, backbone, prompt: UpstreamPrompt, max_len: int,
                   grammar=None, name: str = "opentslm"):
    """A TSLMPrior (every search method runs on it) over the backbone with this prompt prefilled once."""
    import torch

    from specdifftree.prior.encoder import pool
    from specdifftree.prior.model import TSLMPrior

    attach(weights, backbone)
    with torch.inference_mode():  # the encoded first series, for flow networks (S-ADT)
        z = padded_series(prompt.raw_series()[:1], weights.encoder.config.patch) if prompt.series else None
        feats = None if z is None else pool(*weights.encoder(z))[0].float().numpy()
    return TSLMPrior(backbone, prompt.text(), max_len, bias=None, name=name, grammar=grammar,
                     series_features=feats, parts_id=weights.weights_sha256(),
                     segments=segments(weights.encoder, weights.projector, backbone, prompt))


# ------------------------------------------------------------------------------------ --prior opentslm:


def backbone_ref_for(source: str) -> str:
    """The base LLM of a checkpoint when --backbone is not given: the one a converted checkpoint
    records, else the one upstream's model name implies."""
    cfg = Path(source) / "config.json"
    if cfg.is_file():
        ref = json.loads(cfg.read_text()).get("backbone")
        if isinstance(ref, str):
            return ref
    return default_backbone_ref(source)


def is_converted(directory: str | Path) -> bool:
    """Whether `directory` is an OpenTSLM checkpoint in our format (`sdt convert opentslm`, or
    `sdt train-prior --variant sp`)."""
    cfg = Path(directory) / "config.json"
    try:
        return cfg.is_file() and isinstance(json.loads(cfg.read_text()).get("opentslm"), dict)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def holds_opentslm(directory: str | Path) -> bool:
    """An upstream download folder (model_checkpoint.pt) or one of our converted checkpoints."""
    return (Path(directory) / UPSTREAM_FILE).is_file() or is_converted(directory)

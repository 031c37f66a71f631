"""Export a transformers Llama directory to GGUF, so that llama.cpp runs the same weights.

    path = export_gguf("runs/model", "runs/model.gguf", dtype="f32")
    path = default_gguf()    # the embedded default backbone, exported once beside its cache

Reads config.json, the safetensors weights (never a pickle) and tokenizer.json (a byte-level BPE,
e.g. the package's default tokenizer); writes a `llama` GGUF with a `gpt2` tokenizer. Needs the
`gguf` package (`pip install gguf`).

The q and k projections are permuted from the HF rope layout (halves) to llama.cpp's (interleaved
pairs), as llama.cpp's own converter does. Norms stay f32; `dtype="f16"` stores 2-D weights as f16.
The pre-tokenizer is `gpt-2`: llama.cpp's regex for it is HF ByteLevel's, so ids match exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from specdifftree.errors import SDTError

DTYPES = ("f32", "f16")
# HF tensor name (under model.layers.N.) -> GGUF name (under blk.N.)
LAYER_TENSORS = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def export_gguf(hf_dir: str | Path, out_path: str | Path, dtype: str = "f32") -> Path:
    """Convert the Llama model in `hf_dir` to a GGUF file at `out_path`; returns its path."""
    gguf = _import_gguf()
    if dtype not in DTYPES:
        raise SDTError(f"GGUF dtype must be one of {DTYPES}, got '{dtype}'")
    hf_dir, out_path = Path(hf_dir), Path(out_path)
    config = _read_config(hf_dir)
    tokens = _read_tokenizer(hf_dir, config)
    weights = _read_weights(hf_dir)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")  # a crash never leaves half a file
    try:
        writer = gguf.GGUFWriter(str(tmp), "llama")
        _add_hparams(writer, gguf, config, dtype)
        _add_tokenizer(writer, gguf, tokens)
        for name, array in _gguf_tensors(weights, config):
            writer.add_tensor(name, _cast(array, dtype))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def default_gguf(dtype: str = "f32") -> Path:
    """The embedded default backbone as GGUF, exported once into sdt_home()/backbones."""
    from specdifftree.paths import sdt_home
    from specdifftree.prior.default import default_backbone

    src = default_backbone()
    out = sdt_home() / "backbones" / f"{src.name}-{dtype}.gguf"
    out.parent.mkdir(parents=True, exist_ok=True)
    return out if out.is_file() else export_gguf(src, out, dtype)


def _import_gguf():
    try:
        import gguf
    except ImportError:
        raise SDTError("GGUF export needs the 'gguf' package, which is not installed: pip install 'specdifftree[gguf]'") from None
    return gguf


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise SDTError(f"{path.parent} is not a transformers model directory: {path.name} is missing")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SDTError(f"cannot read {path}: {e}") from e


def _read_config(hf_dir: Path) -> dict:
    """config.json, checked to be a plain Llama (default rope, no biases)."""
    if not hf_dir.is_dir():
        raise SDTError(f"model directory {hf_dir} does not exist")
    config = _read_json(hf_dir / "config.json")
    if config.get("model_type") != "llama":
        raise SDTError(f"{hf_dir} holds a '{config.get('model_type')}' model; GGUF export supports Llama only")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise SDTError(f"{hf_dir}: rope scaling '{rope.get('rope_type')}' is not supported by the GGUF export")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise SDTError(f"{hf_dir}: Llama with biases is not supported by the GGUF export")
    config["rope_theta"] = float(config.get("rope_theta") or rope.get("rope_theta") or 10000.0)
    config.setdefault("num_key_value_heads", config["num_attention_heads"])
    config.setdefault("head_dim", config["hidden_size"] // config["num_attention_heads"])
    return config


def _read_weights(hf_dir: Path) -> dict[str, np.ndarray]:
    """HF tensor name -> float32 array, from every *.safetensors file in the directory."""
    from safetensors import safe_open

    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        raise SDTError(f"{hf_dir} has no *.safetensors weights (pickled .bin weights are not read)")
    out = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                out[key] = st.get_tensor(key).float().numpy()
    return out


def _read_tokenizer(hf_dir: Path, config: dict) -> dict:
    """tokenizer.json -> {tokens [V], types [V], merges, bos, eos, pad} for a byte-level BPE."""
    tj = _read_json(hf_dir / "tokenizer.json")
    model, pre = tj.get("model") or {}, tj.get("pre_tokenizer") or {}
    if model.get("type") != "BPE" or pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
        raise SDTError(f"{hf_dir}: only byte-level BPE tokenizers (GPT-2 style) can be exported to GGUF")
    if pre.get("add_prefix_space"):
        raise SDTError(f"{hf_dir}: a ByteLevel pre-tokenizer with add_prefix_space is not supported")
    vocab = dict(model["vocab"])
    special = set()
    for t in tj.get("added_tokens", []):
        vocab[t["content"]] = t["id"]
        if t.get("special"):
            special.add(t["id"])
    n = int(config["vocab_size"])
    if max(vocab.values()) >= n:
        raise SDTError(f"{hf_dir}: the tokenizer has ids beyond the model's vocab_size {n}")
    tokens, types = [f"[PAD{i}]" for i in range(n)], [5] * n  # 5 = UNUSED until filled
    for text, i in vocab.items():
        tokens[i], types[i] = text, 3 if i in special else 1  # CONTROL / NORMAL
    ids = _special_ids(hf_dir, vocab, config)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    # llama.cpp requires the merges key and gguf-py refuses an empty array: with no real merges,
    # write one that can never fire (its parts are multi-character, and no other merge builds them).
    eos = tokens[ids["eos"]]
    return {"tokens": tokens, "types": types, "merges": merges or [f"{eos} {eos}"], **ids}


def _special_ids(hf_dir: Path, vocab: dict[str, int], config: dict) -> dict:
    """bos/eos/pad ids: from tokenizer_config.json's token strings, else config.json; bos defaults to eos."""
    tc_path = hf_dir / "tokenizer_config.json"
    tc = _read_json(tc_path) if tc_path.is_file() else {}
    out = {}
    for key in ("bos", "eos", "pad"):
        tok = tc.get(f"{key}_token")
        tok = tok.get("content") if isinstance(tok, dict) else tok
        out[key] = vocab[tok] if tok in vocab else config.get(f"{key}_token_id")
    if out["eos"] is None:
        raise SDTError(f"{hf_dir}: no EOS token in tokenizer_config.json or config.json")
    if out["bos"] is None:
        out["bos"] = out["eos"]
    return out


def _add_hparams(writer, gguf, config: dict, dtype: str) -> None:
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_rope_dimension_count(int(config["head_dim"]))
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_head_count_kv(int(config["num_key_value_heads"]))
    if config["head_dim"] * config["num_attention_heads"] != config["hidden_size"]:
        writer.add_key_length(int(config["head_dim"]))
        writer.add_value_length(int(config["head_dim"]))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_rope_freq_base(config["rope_theta"])
    writer.add_vocab_size(int(config["vocab_size"]))
    ftype = gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(int(ftype))


def _add_tokenizer(writer, gguf, tok: dict) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tok["tokens"])
    writer.add_token_types(tok["types"])
    writer.add_token_merges(tok["merges"])
    writer.add_bos_token_id(int(tok["bos"]))
    writer.add_eos_token_id(int(tok["eos"]))
    if tok["pad"] is not None:
        writer.add_pad_token_id(int(tok["pad"]))
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)


def _gguf_tensors(w: dict[str, np.ndarray], config: dict):
    """Yield (GGUF name, array in HF [out, in] layout) for every tensor llama.cpp needs."""
    n_head, n_kv = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    yield "token_embd.weight", _get(w, "model.embed_tokens.weight")
    for i in range(int(config["num_hidden_layers"])):
        for hf, gg in LAYER_TENSORS.items():
            a = _get(w, f"model.layers.{i}.{hf}.weight")
            if gg == "attn_q":
                a = permute_rope(a, n_head)
            elif gg == "attn_k":
                a = permute_rope(a, n_kv)
            yield f"blk.{i}.{gg}.weight", a
    yield "output_norm.weight", _get(w, "model.norm.weight")
    if "lm_head.weight" in w:  # absent when tied: llama.cpp then reuses token_embd
        yield "output.weight", w["lm_head.weight"]


def _get(w: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in w:
        raise SDTError(f"weights lack tensor '{name}': not a Llama checkpoint")
    return w[name]


def permute_rope(weight: np.ndarray, n_head: int) -> np.ndarray:
    """[n_head * head_dim, D] from HF's rotate-half rope layout to llama.cpp's interleaved pairs."""
    rows = weight.shape[0]
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _cast(array: np.ndarray, dtype: str) -> np.ndarray:
    """Contiguous f32, or f16 for 2-D weights when dtype == 'f16' (norms stay f32)."""
    want = np.float16 if dtype == "f16" and array.ndim == 2 else np.float32
    return np.ascontiguousarray(array, dtype=want)

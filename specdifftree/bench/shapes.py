"""Random-weight models with the architecture, vocabulary and layer sizes of real LLMs (`sdt bench speed --shape`).

The sizes are those of each model's published config.json; `layers` cuts the depth so that a shape
fits on a CPU (every other size is kept, the vocabulary above all: it is what the search tree's
memory and the per-step [B, V] work scale with). Weights are random (seeded), the tokenizer is the
default byte tokenizer (EOS 256); ids above its 258 tokens exist in the model and are masked by the
forecast grammar like any other non-number token. A shape is built once into
$SDT_HOME/shapes/NAME-LK and reused.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from specdifftree.errors import SDTError
from specdifftree.machine import seeded

# name -> (transformers config class, its keyword arguments)
SHAPES: dict[str, tuple[str, dict]] = {
    "llama-3.2-1b": ("LlamaConfig", dict(
        vocab_size=128_256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, rope_theta=500_000.0,
        max_position_embeddings=131_072, tie_word_embeddings=True, rms_norm_eps=1e-5)),
    "qwen3-0.6b": ("Qwen3Config", dict(
        vocab_size=151_936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, rope_theta=1_000_000.0,
        max_position_embeddings=40_960, tie_word_embeddings=True, rms_norm_eps=1e-6)),
    "gemma-3-270m": ("Gemma3TextConfig", dict(
        vocab_size=262_144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
        num_attention_heads=4, num_key_value_heads=1, head_dim=256, sliding_window=512,
        max_position_embeddings=32_768, rope_theta=1_000_000.0, tie_word_embeddings=True)),
}
EOS_ID, PAD_ID = 256, 257  # the byte tokenizer's


def shape_config(name: str, layers: int | None = None):
    """The transformers config of shape `name`, cut to `layers` decoder layers when given."""
    import transformers

    if name not in SHAPES:
        raise SDTError(f"unknown --shape '{name}'; known: {', '.join(SHAPES)}")
    cls_name, kwargs = SHAPES[name]
    kwargs = dict(kwargs)
    full = kwargs["num_hidden_layers"]
    if layers is not None:
        if not 1 <= layers <= full:
            raise SDTError(f"--layers must be in [1, {full}] for {name}")
        kwargs["num_hidden_layers"] = layers
    if cls_name == "Gemma3TextConfig":  # five sliding-window layers, then a full one, as Gemma 3 has
        kwargs["layer_types"] = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                                 for i in range(kwargs["num_hidden_layers"])]
    return getattr(transformers, cls_name)(bos_token_id=EOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, **kwargs)


def shape_dir(name: str, layers: int | None = None, seed: int = 0) -> Path:
    """A transformers directory holding a random model of shape `name` (built once, then reused)."""
    import torch
    from transformers import AutoModelForCausalLM

    from specdifftree.paths import sdt_home
    from specdifftree.prior.tokenizer import build_hf_tokenizer
    from specdifftree.progress import quiet_model_loading

    config = shape_config(name, layers)
    out = sdt_home() / "shapes" / f"{name}-L{config.num_hidden_layers}-s{seed}"
    if (out / "model.safetensors").is_file():
        return out
    with seeded(seed):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed build
    with quiet_model_loading():
        model.save_pretrained(tmp)
    build_hf_tokenizer().save_pretrained(tmp)
    tmp.rename(out)
    return out

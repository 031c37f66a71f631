"""Where the embedded default backbone is: a small Llama trained on text made from series.

No model hub is reachable on a fresh machine, so the package ships its own causal LM, built by
`sdt pretrain-backbone --preset default` (`train/backbone.py`, on the corpus of `data/corpus.py`)
and committed under specdifftree/assets/backbones/ (`packaged_backbone`): first use is instant and
every machine searches the same weights. Other presets, or an install that left the packaged
copy out, are found in sdt_home()/backbones/ once built there (`cache_dir`; `sdt pretrain-backbone
--preset NAME --out DIR`, or `train.backbone.ensure_backbone`, which builds on first use). Real
users pass a hub id, a local transformers directory or a GGUF file instead.

    path = default_backbone()               # specdifftree/assets/backbones/default-v7
    model, tok = load_hf_dir(path)          # plain transformers objects, eval mode, float32

Tokenizer: `specdifftree.prior.tokenizer` (byte level: id == byte value for 0..255, EOS 256,
PAD 257), so every digit, comma and minus sign is one token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

from specdifftree.errors import SDTError
from specdifftree.paths import sdt_home

DEFAULT_BACKBONE = "default-v7"  # bump the suffix when the preset or corpus changes
TEXT_BACKBONE = "text-v1"  # `--prior text` / `--backbone text`: default-v7 trained on to write text (preset text)
PACKAGED_NAMES = {"default": DEFAULT_BACKBONE, "text": TEXT_BACKBONE}  # packaged backbones by spec name
# the default backbone as `sdt pretrain-backbone --preset default` built it, committed so that first
# use is instant and every machine searches the same weights (its sdt_backbone.json: how it was built)
PACKAGED = Path(__file__).resolve().parent.parent / "assets" / "backbones"


def is_built(path: Path) -> bool:
    """Whether `path` holds a complete backbone build (its record, config, weights and tokenizer)."""
    files = ("sdt_backbone.json", "config.json", "model.safetensors", "tokenizer.json")
    return all((path / f).is_file() for f in files)


def packaged_backbone(name: str = "default") -> Path | None:
    """The packaged backbone `name` ("default": PACKAGED/DEFAULT_BACKBONE; "text": PACKAGED/TEXT_BACKBONE),
    or None when the install left it out."""
    path = PACKAGED / PACKAGED_NAMES[name]
    return path if is_built(path) else None


def cache_dir(preset: str = "default") -> Path:
    """Where a build of the backbone preset lives outside the package: sdt_home()/backbones/<name>."""
    return sdt_home() / "backbones" / PACKAGED_NAMES.get(preset, f"{preset}-v1")


def default_backbone(preset: str = "default") -> Path:
    """The packaged backbone when preset is "default" or "text" and it is installed; otherwise the
    build in `cache_dir(preset)`. SDTError (naming the command that builds it) when there is none."""
    if preset in PACKAGED_NAMES and packaged_backbone(preset) is not None:
        return packaged_backbone(preset)
    target = cache_dir(preset)
    if is_built(target):
        return target
    raise SDTError(f"the {preset} backbone is not built: `sdt pretrain-backbone --preset {preset} --out {target}` "
                   "builds it")


def load_hf_dir(path: Union[str, Path]):
    """(model, tokenizer) of a local transformers directory: eval mode, float32, safetensors only
    (pickled weights are never loaded), no network."""
    path = Path(path)
    if not path.is_dir():
        raise SDTError(f"{path} is not a directory; expected a transformers model directory "
                       "(config.json, model.safetensors, tokenizer.json)")
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    if not any((path / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")):
        pickles = [f for f in ("pytorch_model.bin", "pytorch_model.bin.index.json") if (path / f).is_file()]
        missing.append("model.safetensors" + (f" (found {pickles[0]}; pickled weights are not loaded,"
                                              " convert them to safetensors)" if pickles else ""))
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        missing.append("tokenizer.json")
    if missing:
        raise SDTError(f"{path} is not a transformers model directory: missing {', '.join(missing)}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specdifftree.progress import quiet_model_loading

    try:
        with quiet_model_loading():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True,
                                                         local_files_only=True)
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:  # noqa: BLE001 (any loader failure is a bad directory for the user)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SDTError(f"cannot load the model in {path}: {first}") from None
    model.eval()
    return model, tok

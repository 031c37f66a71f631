"""A trained sensorlm directory: `sensorlm.json` (what it is: kind, the towers' config, the
training record), `model.safetensors` (the weights) and `tokenizer.json` (the text tokenizer).

    check_model_dir("runs/slm")           # SDTError unless it is one; no torch import
    m = load_sensorlm("runs/slm")         # Loaded: model (eval mode), tokenizer, config, record
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from specdifftree.errors import SDTError
from specdifftree.files import write_json
from specdifftree.sensorlm.config import SensorLMConfig

KIND = "sensorlm"
MANIFEST, WEIGHTS, TOKENIZER = "sensorlm.json", "model.safetensors", "tokenizer.json"


def check_model_dir(path) -> dict:
    """The manifest of a trained sensorlm directory; SDTError (one line) when `path` is not one."""
    path = Path(path)
    if not path.is_dir():
        raise SDTError(f"sensorlm model directory not found: {path} (train one: sdt sensorlm train --out DIR)")
    if not (path / MANIFEST).is_file():
        raise SDTError(f"{path} is not a sensorlm model (no {MANIFEST}; train one: sdt sensorlm train --out DIR)")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise SDTError(f"{path / MANIFEST}: unreadable ({type(e).__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        raise SDTError(f"{path} is a model of another kind ({manifest.get('kind') if isinstance(manifest, dict) else '?'}), "
                       f"not a sensorlm model")
    for name in (WEIGHTS, TOKENIZER):
        if not (path / name).is_file():
            raise SDTError(f"{path}: {name} is missing; the training run did not finish (sdt sensorlm train --resume)")
    return manifest


def model_config(manifest: dict) -> SensorLMConfig:
    return SensorLMConfig(**manifest["model"])


def save_sensorlm(path, model, tokenizer, record: dict) -> None:
    """Weights, tokenizer and manifest (record: the training run's config and metrics)."""
    import safetensors.torch

    from specdifftree.files import write_atomic

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_atomic(path / WEIGHTS, safetensors.torch.save(state))
    write_atomic(path / TOKENIZER, tokenizer.to_str().encode())
    write_json(path / MANIFEST, {"kind": KIND, "model": asdict(model.cfg), **record})


@dataclass
class Loaded:
    model: object
    tokenizer: object
    config: SensorLMConfig
    manifest: dict


def load_sensorlm(path) -> Loaded:
    """The model (eval mode, CPU) and tokenizer of a trained directory."""
    import safetensors.torch

    from specdifftree.sensorlm.inputs import load_tokenizer
    from specdifftree.sensorlm.model import SensorLM

    manifest = check_model_dir(path)
    cfg = model_config(manifest)
    model = SensorLM(cfg)
    model.load_state_dict(safetensors.torch.load_file(str(Path(path) / WEIGHTS)))
    model.eval()
    return Loaded(model, load_tokenizer(Path(path) / TOKENIZER), cfg, manifest)

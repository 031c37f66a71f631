"""Resumable backbone pretraining: the state of a build after a step, written atomically so a killed
`sdt pretrain-backbone` goes on from its last checkpoint and ends with the same weights.

    save_state(path, model, opt, meta)       # path/state.safetensors + path/state.json, replaced whole
    meta = load_state(path, model, opt)      # None when there is no complete checkpoint

The weights and the AdamW moments are stored as safetensors (nothing is unpickled); the step, the
losses so far, the token count, the prefix record and what the build is (preset and seed, which a
resume must match) as JSON. Training draws no random numbers after initialisation (no dropout) and
the batches are a deterministic stream, so replaying the stream to the saved step and loading this
state continues the build bit for bit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

from specdifftree.files import replace_dir


def save_state(path: Path, model, opt, meta: dict) -> None:
    """Write the model's weights, the optimizer's moments and `meta` (JSON) into the directory path
    (built beside it, then renamed over it)."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    for pid, st in opt.state_dict()["state"].items():
        for key, value in st.items():
            tensors[f"opt.{pid}.{key}"] = value.detach().reshape(-1).contiguous() if key == "step" else value.detach().contiguous()
    tmp = path.with_name(f"{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps(meta) + "\n")
    replace_dir(tmp, path)


def load_state(path: Path, model, opt) -> Optional[dict]:
    """Load a checkpoint written by `save_state` into model and opt; its meta, or None when path
    holds no complete checkpoint."""
    from safetensors.torch import load_file

    if not (path / "state.json").is_file() or not (path / "state.safetensors").is_file():
        return None
    meta = json.loads((path / "state.json").read_text())
    tensors = load_file(str(path / "state.safetensors"))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    sd = opt.state_dict()
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value.reshape(()) if name == "step" else value
    sd["state"] = state
    opt.load_state_dict(sd)
    return meta

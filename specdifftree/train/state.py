"""Crash-safe files of a train-prior run: the epoch-level resume state.

Resume state (`OUT/<stage>/state.safetensors`): ONE safetensors file, written atomically (temporary
file, fsync, os.replace) after every completed epoch. Its tensors are the current encoder and
head, the best ones so far, and the AdamW moments; its JSON header metadata holds the scalars
(epoch, optimizer step, best validation loss and epoch, epochs without improvement, whether
early stopping fired, the metrics rows, the optimizer's param groups). One file means a kill at
any moment leaves either the previous epoch's state or the new one, never a mix. Random state
is not saved because nothing depends on it: each epoch reseeds torch and its data order from
(seed, stage, epoch).

The run manifest (`OUT/train_prior.json`: what the run is and which checkpoint is its result) is
read by prior/checkpoint.py, so that `--prior OUT` finds the trained prior. Nothing here is ever
unpickled.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Optional

from specdifftree.errors import SDTError
from specdifftree.files import jsonable, write_atomic

STATE = "state.safetensors"


# --------------------------------------------------------------------------------------- resume state


def save_state(path: Path, tensors: dict, meta: dict) -> None:
    """tensors: {name: tensor}; meta: JSON-able scalars. One atomic file."""
    import safetensors.torch

    blob = safetensors.torch.save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                                  metadata={"state": json.dumps(jsonable(meta), allow_nan=False)})
    write_atomic(path, blob)


def load_state(path: Path) -> Optional[tuple[dict, dict]]:
    """(tensors, meta) saved by `save_state`, or None when there is no state file."""
    import safetensors.torch

    path = Path(path)
    if not path.is_file():
        return None
    blob = path.read_bytes()
    try:
        (n,) = struct.unpack("<Q", blob[:8])
        meta = json.loads(json.loads(blob[8: 8 + n])["__metadata__"]["state"])
        return safetensors.torch.load(blob), meta
    except Exception as e:  # noqa: BLE001 (any unreadable state is the same user problem)
        raise SDTError(f"{path}: unreadable resume state ({type(e).__name__}); delete it to restart the stage") from None


def optimizer_tensors(opt) -> tuple[dict, list]:
    """An optimizer's state dict as flat tensors {"opt.<param>.<key>": t} plus its JSON param groups."""
    sd = opt.state_dict()
    tensors = {f"opt.{i}.{k}": v for i, s in sd["state"].items() for k, v in s.items()}
    return tensors, sd["param_groups"]


def restore_optimizer(opt, tensors: dict, groups: list) -> None:
    state: dict[int, dict] = {}
    for name, t in tensors.items():
        if name.startswith("opt."):
            _, i, key = name.split(".", 2)
            state.setdefault(int(i), {})[key] = t
    opt.load_state_dict({"state": state, "param_groups": groups})

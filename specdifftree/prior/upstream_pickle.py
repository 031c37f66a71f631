"""Reading an upstream OpenTSLM checkpoint (a `torch.save` pickle) without running any code from it.

    ckpt = read_upstream("model_checkpoint.pt")     # a dict of tensors and plain data
    config = plain(ckpt["lora_config"])             # peft configs as plain dicts

The file is read with `torch.load(weights_only=True)`, whose unpickler admits tensors and plain
containers only; for the peft config it is given, for this one call, stand-ins for the few peft
classes a LoraConfig pickles (`STAND_INS`): the config is rebuilt as a `PickledRecord` whose fields
are plain data, and its enums as their string values. Nothing from the file is ever called. Any
other global is refused with an SDTError naming it.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

from specdifftree.errors import SDTError


class PickledRecord:
    """A pickled peft config object, read as plain data: `fields` holds its attributes; none of its
    methods exist here, so loading it runs nothing."""

    def __setstate__(self, state) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"a pickled config's state is a {type(state).__name__}, not a dict")
        self.__dict__["fields"] = dict(state)


def _enum_value(value):
    """A pickled enum member (class called with its value) read as the value itself."""
    return value


# The only globals admitted beyond torch's weights-only set: what a peft LoraConfig pickles.
STAND_INS = {
    "peft.tuners.lora.config.LoraConfig": PickledRecord,
    "peft.tuners.lora.config.LoraRuntimeConfig": PickledRecord,
    "peft.tuners.lora.config.LoftQConfig": PickledRecord,
    "peft.utils.peft_types.PeftType": _enum_value,
    "peft.utils.peft_types.TaskType": _enum_value,
    "__builtin__.set": set,  # sets under pickle protocol 2 (torch.save's default)
    "builtins.set": set,
}


def read_upstream(path: str | Path) -> dict:
    """The checkpoint dict of an upstream `.pt` file, loaded without running any code from it."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise SDTError(f"OpenTSLM checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals([(obj, name) for name, obj in STAND_INS.items()]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise SDTError(_refusal(path, str(e))) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise SDTError(f"{path}: not a readable torch checkpoint ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict):
        raise SDTError(f"{path}: expected a checkpoint dict, got {type(ckpt).__name__}")
    return ckpt


def _refusal(path: Path, message: str) -> str:
    """One line naming the global the pickle asked for, or saying the file is not a checkpoint."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found is None:
        detail = message.split("WeightsUnpickler error:")[-1].strip().splitlines()
        return f"{path}: not a readable torch checkpoint ({(detail[0] if detail else 'unpickling failed')[:200]})"
    return (f"{path}: refused to load: the pickle needs the class {found.group(1)}, which an OpenTSLM checkpoint "
            f"never holds (only tensors, plain containers and a peft LoraConfig are read)")


def plain(obj):
    """A loaded value as plain data: PickledRecords become dicts, sets sorted lists."""
    if isinstance(obj, PickledRecord):
        return {k: plain(v) for k, v in obj.fields.items()}
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(plain(v) for v in obj)
    return obj

"""Configuration files: YAML presets in `configs/` and the one precedence rule.

    command line  >  file (a preset, `--config FILE.yaml`, an experiment file)  >  dataclass defaults

Each layer is a mapping merged over the one below it by `merge` (mappings key by key, `None`
deletes a key); `build` turns the result into the config dataclass, refusing unknown keys with a
"did you mean". The CLI's `--config` and `--preset`, `TrainConfig.from_name`, `BackbonePreset`
and experiment files (with their `presets:`) all go through these functions.

    configs/search/NAME.yaml     `sdt search --config configs/search/NAME.yaml` (option defaults)
    configs/train/NAME.yaml      `sdt train-prior --preset NAME` (TrainConfig fields)
    configs/backbone/NAME.yaml   `sdt pretrain-backbone --preset NAME` (BackbonePreset fields)

The config dataclasses: SearchConfig (search/common.py), EncoderConfig (prior/encoder.py),
BackbonePreset (train/config.py), TrainConfig (train/config.py), AmortizeConfig
(amortize/train.py), SpeedConfig (bench/speed.py), ExperimentConfig (experiments/config.py).
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Iterable, Optional, TypeVar

from specdifftree.errors import SDTError, close_match, unknown_name
from specdifftree.paths import configs_dir

T = TypeVar("T")


def merge(base: Any, over: Any) -> Any:
    """Deep merge of `over` into `base`: mappings key by key, None deletes a key, else `over` wins."""
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return over
    out = dict(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge(out.get(k), v)
    return out


def no_unknown(d: dict, known: Iterable[str], where: str, what: str = "key") -> None:
    """SDTError naming the first key of `d` that is not in `known` (with a "did you mean")."""
    known = set(known)
    for k in d:
        if k not in known:
            hint = close_match(str(k), known)
            did = f" (did you mean '{hint}'?)" if hint else ""
            raise SDTError(f"{where}: unknown {what} '{k}'{did}")


def read_yaml(path: str | Path, what: str = "config") -> dict:
    """A YAML file that must hold a mapping (empty file: {}); SDTError otherwise."""
    import yaml

    try:
        # libyaml's safe loader where built (pure Python takes ~0.5 s on a long experiment file)
        data = yaml.load(Path(path).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SDTError(f"cannot read {what} {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise SDTError(f"{what} {path}: expected a YAML mapping")
    return data


def preset_names(kind: str) -> list[str]:
    """The presets of one kind ("search", "train", "backbone"): the YAML files in configs/KIND/."""
    return sorted(p.stem for p in (configs_dir() / kind).glob("*.yaml"))


def preset_path(kind: str, name: str) -> Path:
    path = configs_dir() / kind / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(preset_names(kind)) or "none"
        raise unknown_name(f"{kind} preset", name, preset_names(kind), f"{known} (files in {configs_dir() / kind})")
    return path


def load_preset(kind: str, name: str) -> dict:
    """configs/KIND/NAME.yaml as a mapping."""
    return read_yaml(preset_path(kind, name), f"{kind} preset")


def build(cls: type[T], *layers: Optional[dict], where: str = "config") -> T:
    """The dataclass `cls` from its defaults overlaid by `layers` (lowest first, None skipped);
    nested dataclass fields take nested mappings. SDTError on unknown keys or bad values."""
    data: dict = {}
    for layer in layers:
        if layer:
            data = merge(data, layer)
    return _build(cls, data, where)


def _build(cls, data: dict, where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    no_unknown(data, fields, where, f"{cls.__name__} field")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        sub = hints.get(name)
        if dataclasses.is_dataclass(sub) and isinstance(value, dict):
            value = _build(sub, value, f"{where}: {name}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise SDTError(f"{where}: {e}") from None

"""Checkpoints of the trainable prior parts: safetensors + JSON, never pickle.

    dir/weights.safetensors   every tensor, keyed "<module>.<state-dict key>" (e.g. "head.proj.weight")
    dir/config.json           the caller's config (encoder / head / projector configs, backbone, vocab size)
                              plus format_version, weights_sha256 and a manifest {tensor: {dtype, shape}}

    save_checkpoint(d, {"encoder": enc, "head": head}, parts_config(enc, head, backbone="default"))
    encoder, head, projector, config = build_from_checkpoint(d)
    checkpoint_sha256({"encoder": enc, "head": head})   # that weights.safetensors' sha256, in memory

Writing is atomic per file: each file is written under a temporary name in `dir`, fsynced
and os.replace'd into place, weights first and config.json last. config.json is the commit
record: it names the sha256 of the weights it belongs to, so a reader that catches the pair
mid-update, or a directory left by a crash, is refused rather than silently mixed.

Loading reads the weights' bytes once, checks their hash, and deserialises those same bytes
with safetensors; the config is plain JSON. Nothing is ever unpickled (no torch.load).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Optional

import safetensors.torch
import torch
import torch.nn as nn

from specdifftree.errors import SDTError
from specdifftree.files import write_atomic
from specdifftree.prior.encoder import EncoderConfig, TransformerCNNEncoder
from specdifftree.prior.heads import LogitBiasHead, SoftPromptProjector

FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
CONFIG = "config.json"


def parts_config(
    encoder: TransformerCNNEncoder,
    head: Optional[LogitBiasHead],
    projector: Optional[SoftPromptProjector] = None,
    backbone: Any = None,
    vocab_size: Optional[int] = None,
) -> dict:
    """The config `build_from_checkpoint` rebuilds these modules from. `backbone`: a hub id, path or dict.
    A soft-prompt prior may have no head (None); give `vocab_size` then."""
    return {
        "encoder": dataclasses.asdict(encoder.config),
        "head": None if head is None else {"width": head.width, "vocab_size": head.vocab_size},
        "projector": None if projector is None else {"width": projector.width, "hidden": projector.hidden,
                                                     "depth": projector.depth},
        "backbone": backbone,
        "vocab_size": head.vocab_size if head is not None else vocab_size,
    }

# ---------------------------------------------------------------------------------------------- saving


def save_checkpoint(dir: str | Path, modules: dict[str, nn.Module | dict[str, torch.Tensor]], config: dict) -> Path:
    """Write `modules`' state dicts (a module, or a plain {key: tensor} group) and `config`
    (dataclasses allowed) to `dir`, replacing what is there."""
    dir = Path(dir)
    tensors = _flat(modules)
    blob = safetensors.torch.save(tensors)
    meta = {
        **config,
        "format_version": FORMAT_VERSION,
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "tensors": {k: {"dtype": _dtype_name(t.dtype), "shape": list(t.shape)} for k, t in tensors.items()},
    }
    text = json.dumps(meta, indent=2, default=_json_default, allow_nan=False) + "\n"  # fails before any write

    if dir.exists() and not dir.is_dir():
        raise SDTError(f"checkpoint path {dir} exists and is not a directory")
    dir.mkdir(parents=True, exist_ok=True)
    write_atomic(dir / WEIGHTS, blob)
    write_atomic(dir / CONFIG, text.encode())
    return dir


def _flat(modules: dict[str, nn.Module | dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """{"<module>.<state-dict key>": tensor on the host} of every module (what weights.safetensors holds)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        if not name or "." in name:
            raise ValueError(f"module name {name!r} must be non-empty and contain no '.'")
        group = module.state_dict() if isinstance(module, nn.Module) else module
        for key, t in group.items():
            tensors[f"{name}.{key}"] = t.detach().cpu().contiguous()
    return tensors


def checkpoint_sha256(modules: dict[str, nn.Module | dict[str, torch.Tensor]]) -> str:
    """The sha256 of the weights.safetensors `save_checkpoint` writes for `modules`, computed in
    memory: parts saved and loaded again, or never saved, have the same identity."""
    return hashlib.sha256(safetensors.torch.save(_flat(modules))).hexdigest()


def tensors_sha256(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """sha256 of every tensor's name, dtype, shape and bytes (all values), one tensor at a time: the
    identity of a model held in memory only (no weights file to hash)."""
    h = hashlib.sha256()
    for name, t in named:
        t = t.detach()
        h.update(f"{name} {_dtype_name(t.dtype)} {list(t.shape)}\n".encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _json_default(o: Any) -> Any:
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"checkpoint config value of type {type(o).__name__} is not JSON-serialisable")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# ---------------------------------------------------------------------------------------------- loading


def load_checkpoint(dir: str | Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """`({module: {state-dict key: tensor}}, config)` from `dir`, verified against config.json, or SDTError."""
    dir = Path(dir)
    cfg_path, w_path = dir / CONFIG, dir / WEIGHTS
    if not dir.is_dir():
        raise SDTError(f"checkpoint directory not found: {dir}")
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise SDTError(f"{p}: file missing, {dir} is not a complete checkpoint")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SDTError(f"{cfg_path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise SDTError(f"{cfg_path}: expected a JSON object, got {type(config).__name__}")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise SDTError(f"{cfg_path}: checkpoint format version {version!r}; this specdifftree reads {FORMAT_VERSION}")

    blob = w_path.read_bytes()  # hashed and deserialised from the same bytes
    digest = hashlib.sha256(blob).hexdigest()
    if digest != config.get("weights_sha256"):
        raise SDTError(f"{w_path}: sha256 {digest[:16]}... does not match config.json (file changed or corrupt)")
    try:
        tensors = safetensors.torch.load(blob)
    except Exception as e:  # safetensors raises its own error types
        raise SDTError(f"{w_path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None

    manifest = config.get("tensors")
    if not isinstance(manifest, dict):
        raise SDTError(f"{cfg_path}: no tensor manifest ('tensors')")
    for name, spec in manifest.items():
        if name not in tensors:
            raise SDTError(f"{w_path}: tensor '{name}' listed in config.json is missing")
        t = tensors[name]
        want = (spec.get("dtype"), spec.get("shape")) if isinstance(spec, dict) else spec
        if want != (_dtype_name(t.dtype), list(t.shape)):
            have = f"{_dtype_name(t.dtype)} {list(t.shape)}"
            raise SDTError(f"{w_path}: tensor '{name}' is {have}, config.json says {want}")
    extra = sorted(set(tensors) - set(manifest))
    if extra:
        raise SDTError(f"{w_path}: tensor '{extra[0]}' is not listed in config.json")

    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        module, _, rest = key.partition(".")
        state.setdefault(module, {})[rest] = t
    return state, config


def build_from_checkpoint(
    dir: str | Path,
) -> tuple[TransformerCNNEncoder, Optional[LogitBiasHead], Optional[SoftPromptProjector], dict]:
    """Rebuild encoder, head and (if saved) projector from `dir`, in eval mode, or SDTError.

    Each module takes the saved tensors' dtype, so a round trip is bit-identical. The head is None
    in a soft-prompt checkpoint that has none (config "head": null).
    """
    state, config = load_checkpoint(dir)
    modules = build_modules(state, config, dir)
    return modules["encoder"], modules.get("head"), modules.get("projector"), config


def build_modules(state: dict[str, dict[str, torch.Tensor]], config: dict, dir: str | Path,
                  extra: tuple[str, ...] = ()) -> dict[str, nn.Module]:
    """{"encoder", "head"?, "projector"?} rebuilt from `load_checkpoint`'s output, in eval mode.
    `extra`: further tensor groups the caller reads itself (any other group is refused)."""
    cfg_path, w_path = Path(dir) / CONFIG, Path(dir) / WEIGHTS
    if not isinstance(config.get("encoder"), dict):
        raise SDTError(f"{cfg_path}: no 'encoder' section")
    if not isinstance(config.get("head"), dict) and not config.get("projector"):
        raise SDTError(f"{cfg_path}: no 'head' section (and no projector)")
    try:
        modules: dict[str, nn.Module] = {"encoder": TransformerCNNEncoder(EncoderConfig(**config["encoder"]))}
        if isinstance(config.get("head"), dict):
            modules["head"] = LogitBiasHead(**config["head"])
        if config.get("projector"):
            modules["projector"] = SoftPromptProjector(**config["projector"])
    except (TypeError, ValueError) as e:
        raise SDTError(f"{cfg_path}: bad module config ({e})") from None
    if "head" in modules and config.get("vocab_size", modules["head"].vocab_size) != modules["head"].vocab_size:
        raise SDTError(f"{cfg_path}: vocab_size {config['vocab_size']} but the head has {modules['head'].vocab_size}")
    for group in state:
        if group not in modules and group not in extra:
            raise SDTError(f"{cfg_path}: the weights hold a {group} but the config has none")

    for name, module in modules.items():
        _load_strict(module, state.get(name, {}), name, w_path)
    return modules


def _load_strict(module: nn.Module, sd: dict[str, torch.Tensor], name: str, w_path: Path) -> None:
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if missing:
        raise SDTError(f"{w_path}: missing tensor '{name}.{missing[0]}' ({len(missing)} missing in all)")
    if unexpected:
        raise SDTError(f"{w_path}: unexpected tensor '{name}.{unexpected[0]}' for the configured {name}")
    for key, t in sd.items():
        if t.shape != own[key].shape:
            want = list(own[key].shape)
            raise SDTError(f"{w_path}: tensor '{name}.{key}' has shape {list(t.shape)}, the {name} wants {want}")
    dtypes = {t.dtype for t in sd.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        module.to(dtypes.pop())
    module.load_state_dict(sd, strict=True)
    module.eval()


# --------------------------------------------------------------------------- train-prior run directories

RUN_MANIFEST = "train_prior.json"  # written by `sdt train-prior` (train/curriculum.py); names the final checkpoint


def read_run_manifest(run_dir: str | Path) -> Optional[dict]:
    """A train-prior run directory's manifest, or None when `run_dir` is not one."""
    path = Path(run_dir) / RUN_MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SDTError(f"{path}: not valid JSON ({e})") from None


def run_final_checkpoint(run_dir: str | Path) -> Optional[Path]:
    """The prior checkpoint a train-prior run directory stands for (its last finished stage's best),
    or None when `run_dir` is not a run directory."""
    record = read_run_manifest(run_dir)
    if record is None:
        return None
    rel = record.get("final_checkpoint")
    if not rel:
        raise SDTError(f"{run_dir} is a train-prior run with no finished stage yet; "
                       f"finish it with `sdt train-prior --out {run_dir} --resume`")
    return Path(run_dir) / rel


def install_prior(checkpoint: str | Path) -> Path:
    """Copy a prior checkpoint (or a train-prior run's final one) to where `--prior default` finds it
    (`paths.installed_prior_dir()`), swapped in whole, never half-written. Returns where it went."""
    import shutil

    from specdifftree.files import replace_dir
    from specdifftree.paths import installed_prior_dir

    source = run_final_checkpoint(checkpoint) or Path(checkpoint)
    if not (source / "weights.safetensors").is_file():
        raise SDTError(f"{checkpoint} is not a prior checkpoint or a finished `sdt train-prior` run")
    target = installed_prior_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    replace_dir(tmp, target)
    return target


def uninstall_prior() -> Optional[Path]:
    """Remove the installed prior (`--prior default` is the backbone alone again); where it was, or None."""
    import shutil

    from specdifftree.paths import installed_prior_dir

    target = installed_prior_dir()
    if not target.exists():
        return None
    shutil.rmtree(target)
    return target

"""Cheap checks of a command's inputs, run before anything heavy loads (a model, torch, a data set):
output paths, input files, prior specs and their files, reward specs, flow directories and stage
names. Each raises SDTError with one line; none imports torch or transformers, so a typo fails in
well under a second. The API functions call these first (api.py), so Python users get them too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from specdifftree.errors import SDTError
from specdifftree.prior.spec import PriorSpec, parse_prior

PathLike = Union[str, os.PathLike]


def output_path(path: Optional[PathLike], what: str, directory: bool = False) -> None:
    """`path` can be written as a file (or, `directory`, used as a directory): not the other kind of
    thing, and either writable or creatable (its nearest existing ancestor a writable directory)."""
    if path is None:
        return
    p = Path(path).expanduser()
    if p.exists():
        if directory and not p.is_dir():
            raise SDTError(f"{what} {path} is a file, not a directory")
        if not directory and p.is_dir():
            raise SDTError(f"{what} {path} is a directory; give a file path")
        if not os.access(p, os.W_OK):
            raise SDTError(f"{what} {path} is not writable")
        return
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise SDTError(f"{what} {path} cannot be created: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SDTError(f"{what} {path} cannot be created: {parent} is not writable")


def input_file(path: PathLike, what: str, hint: str = "") -> Path:
    """`path` is an existing file (not a directory); `hint` follows the message (how to make one)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise SDTError(f"{what} {path} is a directory, not a file")
    if not p.is_file():
        raise SDTError(f"{what} not found: {path}{hint}")
    return p


def input_dir(path: PathLike, what: str) -> Path:
    """`path` is an existing directory."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise SDTError(f"{what} {path} is not a directory" if p.exists() else f"{what} not found: {path}")
    return p


def is_builtin(spec: PriorSpec) -> bool:
    """A built-in enumerable problem (`markov:toy3`, ...), which brings its own reward and lambda."""
    from specdifftree.prior.builtin import BUILTIN_PROBLEMS

    return spec.kind == "markov" and spec.arg in BUILTIN_PROBLEMS


def prior_spec(spec: Union[str, PriorSpec], backbone: Optional[str] = None, option: str = "--prior") -> PriorSpec:
    """The parsed prior spec, its files checked: a Markov JSON, a GGUF file, an OpenTSLM checkpoint, a
    local hf: directory, a checkpoint DIR that holds a prior, and --backbone's own reference.
    option: the option the messages name (--prior, --backbone)."""
    parsed = spec if isinstance(spec, PriorSpec) else parse_prior(str(spec), backbone)
    arg, where = parsed.arg, f"{option} {parsed.text}"
    if parsed.kind == "markov" and not is_builtin(parsed):
        input_file(arg, f"{where}: Markov file")
    elif parsed.kind == "gguf":
        input_file(arg, f"{where}: GGUF file")
    elif parsed.kind == "opentslm" and not Path(arg).expanduser().exists():
        raise SDTError(f"{where}: OpenTSLM checkpoint not found: {arg}")
    elif parsed.kind == "hf" and arg.startswith(("/", ".", "~")):  # a local path (else a Hub id)
        input_dir(arg, f"{where}: model directory")
    elif parsed.kind == "checkpoint":
        checkpoint_files(Path(arg), parsed.text)
    if parsed.backbone is not None:
        prior_spec(parsed.backbone, option="--backbone")
    return parsed


def checkpoint_files(path: Path, text: str) -> None:
    """A checkpoint DIR holds a prior: its weights, a train-prior run's manifest, or an OpenTSLM
    checkpoint (upstream's file or ours); what each holds is read when it loads."""
    # prior/checkpoint.py's WEIGHTS and RUN_MANIFEST, prior/opentslm.py's UPSTREAM_FILE (those modules import torch)
    if not any((path / name).is_file() for name in ("weights.safetensors", "train_prior.json", "model_checkpoint.pt")):
        raise SDTError(f"{text} is a directory but not a prior checkpoint (no weights.safetensors); "
                       f"for a transformers model directory use hf:{text}")


def reward_specs(prior: PriorSpec, rewards: Sequence[str]):
    """The reward the specs name (parsed, plugins imported), or None for a built-in problem's own;
    SDTError when a prior that is not a built-in problem has no --reward."""
    if rewards:
        from specdifftree.rewards.plugins import parse_reward

        return parse_reward(list(rewards))
    if not is_builtin(prior):
        raise SDTError("--reward is required (e.g. --reward spectral, --reward plugin.py:fn)")
    return None


def flow_dir(flow: Optional[PathLike], why: str) -> None:
    """A flow network directory (`sdt amortize --out`) for `why` (e.g. "--method sadt"): present,
    with a flow checkpoint's config.json; whether it fits the prior is checked when it loads."""
    if flow is None:
        raise SDTError(f"{why} needs --flow DIR, a flow network trained with `sdt amortize`")
    if not isinstance(flow, (str, os.PathLike)):
        return  # an opened flow, from the Python API
    path = input_dir(flow, f"{why}: flow directory")
    cfg = path / "config.json"
    if not cfg.is_file():
        raise SDTError(f"{cfg}: file missing, {flow} is not a flow checkpoint (write one with `sdt amortize --out DIR`)")
    try:
        kind = json.loads(cfg.read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind != "sdt-flow":  # amortize/flow.py's KIND (that module imports torch)
        raise SDTError(f"{flow} is not a flow checkpoint (write one with `sdt amortize --out DIR`)")


def task_options(task: str, question: Optional[str], choices, horizon: Optional[int] = None,
                 max_chars: Optional[int] = None, text_outputs: Optional[dict] = None) -> None:
    """--task, --question, --choices and --horizon agree (data/tasks.py's check_task), and no
    forecast-only output (`text_outputs`: {option: value}) is asked of a caption or qa task."""
    from specdifftree.data.tasks import check_task, split_choices

    if choices is not None and not split_choices(choices) or (isinstance(choices, str) and not choices.strip()):
        raise SDTError("--choices is empty: give the answers allowed, e.g. --choices walking,standing")
    check_task(task, question, split_choices(choices) if choices else (), horizon, max_chars)
    for option, value in (text_outputs or {}).items():
        if task != "forecast" and value:
            raise SDTError(f"{option} is for --task forecast, not --task {task}")


def names(given: Iterable[str], known: Iterable[str], what: str) -> None:
    """Every name in `given` is one of `known` (SDTError with a "did you mean" otherwise)."""
    from specdifftree.errors import unknown_name

    known = list(known)
    for name in given:
        if name not in known:
            raise unknown_name(what, name, known)


__all__ = ["checkpoint_files", "flow_dir", "input_dir", "input_file", "is_builtin", "names", "output_path",
           "prior_spec", "reward_specs", "task_options"]

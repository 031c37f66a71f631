"""The grammar of prior specs: `--prior SPEC`, `--backbone REF` and a checkpoint's backbone reference
are split into a kind and an argument here, and only here (`parse_prior`).

    parse_prior("hf:runs/bb")        -> PriorSpec(kind="hf", arg="runs/bb", text="hf:runs/bb")
    parse_prior("runs/prior")        -> PriorSpec(kind="checkpoint", ...)   (an existing directory)
    checkpoint_dir(parse_prior("default"))   -> the installed prior, if `sdt prior install` put one there

Each kind (`PRIOR_KINDS`) names its loader as a lazy "module:function" (prior/sources.py), so a
backend is imported only when a spec names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from specdifftree.errors import SDTError, unknown_name


@dataclass(frozen=True)
class PriorSpec:
    """A parsed `--prior`. kind: a key of PRIOR_KINDS; arg: what follows "kind:" (a path, an id,
    a built-in name; the checkpoint directory for "checkpoint"); text: the spec as written."""

    kind: str
    arg: str
    text: str
    backbone: Optional[str] = None  # --backbone: the LLM of an opentslm: prior, or one replacing a checkpoint's


@dataclass(frozen=True)
class PriorKind:
    loader: str  # "module:function", called as fn(spec: PriorSpec, placement: Placement | None) -> PriorSource
    usage: str
    backbone: bool = False  # the spec names a backbone (valid as a checkpoint's backbone reference)


PRIOR_KINDS: dict[str, PriorKind] = {
    "markov": PriorKind("specdifftree.prior.sources:open_markov",
                        "markov:FILE.json, or a built-in problem name (see `sdt bench exactness --list`)"),
    "default": PriorKind("specdifftree.prior.sources:open_tslm", "default: the embedded default backbone", backbone=True),
    "text": PriorKind("specdifftree.prior.sources:open_tslm", "text: the packaged backbone that writes text", backbone=True),
    "hf": PriorKind("specdifftree.prior.sources:open_tslm", "hf:ID_OR_PATH: a transformers causal LM", backbone=True),
    "gguf": PriorKind("specdifftree.prior.sources:open_tslm", "gguf:FILE: a GGUF model through llama.cpp", backbone=True),
    "checkpoint": PriorKind("specdifftree.prior.sources:open_tslm",
                            "DIR: a prior checkpoint, or a `sdt train-prior --out` run directory"),
    "opentslm": PriorKind("specdifftree.prior.sources:open_opentslm",
                          "opentslm:CKPT: an OpenTSLM checkpoint, SP or Flamingo (model_checkpoint.pt, its folder, or "
                          "`sdt convert opentslm` output), with --backbone hf:LLM_DIR"),
}
BACKBONE_KINDS = ("opentslm", "checkpoint")  # the kinds --backbone applies to


def parse_prior(spec: str, backbone: Optional[str] = None) -> PriorSpec:
    """The one parser of a prior spec (also of a checkpoint's backbone reference), with --backbone
    where given (opentslm: and checkpoint specs only). SDTError, with a "did you mean", on anything else."""
    spec = str(spec)
    kind, sep, arg = spec.partition(":")
    if spec in ("default", "text"):
        parsed = PriorSpec(spec, "", spec)
    elif sep and arg and kind in PRIOR_KINDS and kind not in ("default", "text", "checkpoint"):
        parsed = PriorSpec(kind, arg, spec)
    elif Path(spec).is_dir():
        parsed = PriorSpec("checkpoint", spec, spec)
    else:
        raise unknown_name("prior", spec, PRIOR_KINDS, "; ".join(k.usage for k in PRIOR_KINDS.values()), word=kind)
    if backbone is None:
        return parsed
    if parsed.kind not in BACKBONE_KINDS:
        raise SDTError(f"--backbone applies to opentslm:CKPT and checkpoint DIR priors, not '{spec}'")
    return PriorSpec(parsed.kind, parsed.arg, spec, str(backbone))


def absolute_spec(spec: str) -> str:
    """The spec with an absolute path ("hf:DIR", "gguf:FILE", "markov:FILE", a checkpoint DIR), so
    that a checkpoint naming it works from any directory; others unchanged."""
    parsed = parse_prior(spec)
    if parsed.arg and Path(parsed.arg).exists():
        path = str(Path(parsed.arg).resolve())
        return path if parsed.kind == "checkpoint" else f"{parsed.kind}:{path}"
    return spec


def checkpoint_dir(spec: PriorSpec) -> Optional[Path]:
    """The prior checkpoint a spec stands for: a checkpoint DIR, a train-prior run's final stage, the
    installed prior for "default" once `sdt prior install` put one there; None: backbone alone."""
    from specdifftree.paths import installed_prior_dir
    from specdifftree.prior.checkpoint import run_final_checkpoint

    if spec.kind == "checkpoint":
        path = Path(spec.arg)
        path = run_final_checkpoint(path) or path
        if not (path / "weights.safetensors").is_file():
            raise SDTError(f"{spec.text} is a directory but not a prior checkpoint (no weights.safetensors); "
                           f"for a transformers model directory use hf:{spec.text}")
        return path
    if spec.kind == "default" and (installed_prior_dir() / "weights.safetensors").is_file():
        return installed_prior_dir()
    return None


__all__ = ["BACKBONE_KINDS", "PRIOR_KINDS", "PriorKind", "PriorSpec", "absolute_spec", "checkpoint_dir", "parse_prior"]

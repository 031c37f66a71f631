"""`--prior SPEC` -> a Prior. Backends import lazily, so only the one asked for is loaded.

    markov:FILE.json | markov:NAME     analytic Markov chain (NAME: a built-in problem)
    default                            the embedded default backbone (+ trained parts, once trained)
    hf:ID_OR_PATH                      any transformers causal LM
    gguf:FILE                          any GGUF model through llama.cpp
    DIR                                a prior checkpoint (encoder + head + backbone reference)
    RUN_DIR                            a `sdt train-prior --out` run: its final stage's best checkpoint
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Optional

from specdifftree.errors import SDTError
from specdifftree.prior.base import Prior
from specdifftree.rewards.base import Context


def _markov(arg: str, context: Optional[Context]) -> Prior:
    from specdifftree.bench.problems import BUILTIN_PROBLEMS
    from specdifftree.prior.markov import MarkovPrior

    if arg in BUILTIN_PROBLEMS:
        return BUILTIN_PROBLEMS[arg]().prior
    return MarkovPrior.from_json(arg)


def open_backbone(ref: str):
    """A Backbone from a backbone reference: "default", "hf:ID_OR_PATH" or "gguf:FILE"."""
    kind, _, arg = ref.partition(":")
    if ref == "default":
        from specdifftree.prior.backbones.hf import HFBackbone
        from specdifftree.prior.default import ensure_default_backbone

        return HFBackbone.from_pretrained(str(ensure_default_backbone()))
    if kind == "hf" and arg:
        from specdifftree.prior.backbones.hf import HFBackbone

        return HFBackbone.from_pretrained(arg)
    if kind == "gguf" and arg:
        from specdifftree.prior.backbones.llamacpp import LlamaCppBackbone

        return LlamaCppBackbone(arg, n_seq_max=256)  # the most llama.cpp allows: fewer evictions
    raise SDTError(f"unknown backbone '{ref}': use default, hf:ID_OR_PATH or gguf:FILE")


def trained_default_dir() -> Path:
    """Where `sdt train-prior` puts the prior that `--prior default` uses once it exists."""
    from specdifftree.prior.default import sdt_home

    return sdt_home() / "priors" / "default"


def _tslm(spec: str, context: Optional[Context], backbone=None) -> Prior:
    from specdifftree.data.prompts import forecast_prompt
    from specdifftree.prior.model import PriorParts, TSLMPrior

    if context is None or context.series is None or context.horizon is None:
        raise SDTError(f"--prior {spec} forecasts from a series: give --series FILE.csv and --horizon H")
    checkpoint = Path(spec) if Path(spec).is_dir() else None
    if checkpoint is not None and (checkpoint / "train_prior.json").is_file():  # a `sdt train-prior --out` DIR
        from specdifftree.train.state import final_checkpoint

        checkpoint = final_checkpoint(checkpoint)
    if spec == "default" and (trained_default_dir() / "weights.safetensors").is_file():
        checkpoint = trained_default_dir()
    if checkpoint is not None:
        if not (checkpoint / "weights.safetensors").is_file():
            raise SDTError(f"{spec} is a directory but not a prior checkpoint (no weights.safetensors); "
                           f"for a transformers model directory use hf:{spec}")
        parts = PriorParts.load(checkpoint)
        if parts.projector is not None and parts.backbone_ref.startswith("gguf:"):
            from specdifftree.prior.backbones.llamacpp import SOFT_PROMPT_NEEDS_HF

            raise SDTError(f"{checkpoint}: {SOFT_PROMPT_NEEDS_HF}")
    if backbone is None:
        backbone = open_backbone(parts.backbone_ref if checkpoint is not None else spec)
    if checkpoint is None:
        parts = PriorParts.fresh(backbone.vocab_size, spec)
    from specdifftree.prior.constraint import ForecastGrammar

    history, horizon, codec = context.series, int(context.horizon), context.codec
    grammar = ForecastGrammar(backbone.token_strings(), backbone.eos_id, horizon, sep=codec.sep)
    prompt = forecast_prompt(history, horizon, codec)
    return TSLMPrior(backbone, prompt, grammar.max_tokens(), parts.bias(history), name=spec, grammar=grammar,
                     soft_prompt=parts.soft_prompt_for(history), series_features=parts.embed(history),
                     parts_id=parts.fingerprint())


PRIOR_KINDS = {
    "markov": (_markov, "markov:FILE.json, or a built-in problem name (see `sdt bench exactness --list`)"),
    "default": (None, "default: the embedded default backbone"),
    "hf": (None, "hf:ID_OR_PATH: a transformers causal LM"),
    "gguf": (None, "gguf:FILE: a GGUF model through llama.cpp"),
}


def load_prior(spec: str, context: Optional[Context] = None, backbone=None) -> Prior:
    """The prior `spec` for `context`; `backbone`: an already opened backbone for it (a neural prior
    for many contexts then shares one model)."""
    kind, sep, arg = spec.partition(":")
    if kind == "markov" and arg:
        return _markov(arg, context)
    if spec == "default" or (kind in ("hf", "gguf") and arg) or Path(spec).is_dir():
        return _tslm(spec, context, backbone)
    known = "; ".join(v[1] for v in PRIOR_KINDS.values()) + "; or a prior checkpoint DIR"
    hint = difflib.get_close_matches(kind, PRIOR_KINDS, n=1)
    did = f" Did you mean '{hint[0]}'?" if hint and hint[0] != kind else ""
    raise SDTError(f"unknown prior '{spec}'.{did} Known: {known}")

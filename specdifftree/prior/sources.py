"""Opening a prior spec: `open_prior(spec)` loads what is heavy (a backbone, trained parts) once and
returns a PriorSource; `source.prior_for(context)` gives a Prior for one context, with its own cost
meter. The loaders here are what prior/spec.py's PRIOR_KINDS name.

    source = open_prior("default")                # the embedded backbone (and the installed prior, if any)
    prior = source.prior_for(context)             # prompt, grammar and bias for this context
    backbone = open_backbone("hf:runs/bb")        # a Backbone alone, from a backbone reference
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

from specdifftree.data.context import Context
from specdifftree.entries import load_entry
from specdifftree.errors import SDTError
from specdifftree.prior.backbones.base import Placement
from specdifftree.prior.base import Prior
from specdifftree.prior.builtin import BUILTIN_PROBLEMS, BuiltinProblem
from specdifftree.prior.markov import MarkovPrior
from specdifftree.prior.spec import PRIOR_KINDS, PriorSpec, checkpoint_dir, parse_prior


class PriorSource(Protocol):
    """An opened prior spec: what is heavy (a backbone, trained parts) is loaded once; each context
    gets its own Prior with its own cost meter."""

    spec: PriorSpec
    builtin: Optional[BuiltinProblem]
    checkpoint: Optional[Path]  # the trained prior the spec resolved to (for "default": the installed one)

    def prior_for(self, context: Context) -> Prior: ...


def open_prior(spec: str | PriorSpec, placement: Optional[Placement] = None, backbone: Optional[str] = None) -> PriorSource:
    """Load what `spec` names, through its kind's loader; a model runs on `placement`'s device and in
    its dtype (default: auto). backbone: --backbone (see PriorSpec)."""
    parsed = spec if isinstance(spec, PriorSpec) else parse_prior(spec, backbone)
    return load_entry(PRIOR_KINDS[parsed.kind].loader)(parsed, placement)


def load_prior(spec: str, context: Optional[Context] = None, placement: Optional[Placement] = None) -> Prior:
    """The prior `spec` for one context (a shortcut for `open_prior(spec).prior_for(context)`)."""
    return open_prior(spec, placement).prior_for(context or Context())


@dataclass
class MarkovSource:
    spec: PriorSpec
    prior: MarkovPrior
    builtin: Optional[BuiltinProblem] = None
    checkpoint: Optional[Path] = None

    def prior_for(self, context: Context) -> Prior:
        no_text_task(self.spec, context)
        return self.prior.metered()


def open_markov(spec: PriorSpec, placement: Optional[Placement] = None) -> MarkovSource:
    """A Markov prior (computed on the host: `placement` does not apply)."""
    if spec.arg in BUILTIN_PROBLEMS:
        builtin = BUILTIN_PROBLEMS[spec.arg]()
        return MarkovSource(spec, builtin.prior, builtin)
    return MarkovSource(spec, MarkovPrior.from_json(spec.arg))


def open_backbone(ref: str | PriorSpec, placement: Optional[Placement] = None):
    """A Backbone from a backbone reference: "default", "hf:ID_OR_PATH" or "gguf:FILE", on the device
    and in the dtype of `placement` (default: auto; llama.cpp reads only its n_gpu_layers)."""
    spec = ref if isinstance(ref, PriorSpec) else parse_prior(ref)
    if not PRIOR_KINDS[spec.kind].backbone:
        raise SDTError(f"unknown backbone '{spec.text}': use default, hf:ID_OR_PATH or gguf:FILE")
    placement = (placement or Placement()).validate()
    if spec.kind in ("default", "text"):
        from specdifftree.prior.backbones.hf import HFBackbone
        from specdifftree.prior.default import default_backbone

        return HFBackbone.from_pretrained(str(default_backbone(spec.kind)), placement)
    if spec.kind == "hf":
        from specdifftree.prior.backbones.hf import HFBackbone

        return HFBackbone.from_pretrained(spec.arg, placement)
    from specdifftree.prior.backbones.llamacpp import LlamaCppBackbone

    # n_seq_max: the most llama.cpp allows, fewer evictions
    return LlamaCppBackbone(spec.arg, n_seq_max=256, n_gpu_layers=placement.gpu_layers())


@dataclass
class TSLMSource:
    """A backbone and its trained parts, loaded once; `prior_for` builds the per-context prompt,
    grammar and bias."""

    spec: PriorSpec
    backbone: object  # prior.backbones.base.Backbone
    parts: object  # prior.model.PriorParts
    builtin: Optional[BuiltinProblem] = None
    checkpoint: Optional[Path] = None  # where the parts came from (None: fresh parts)
    parts_id: str = ""  # parts.weights_sha256(), hashed once for every context

    def prior_for(self, context: Context) -> Prior:
        from specdifftree.prior.model import TSLMPrior

        self.parts_id = self.parts_id or self.parts.weights_sha256()
        if context.task is not None:  # a caption or a question
            from specdifftree.prior.tasks import text_prior

            return text_prior(self.backbone, self.parts, context, name=self.spec.text, parts_id=self.parts_id)
        return TSLMPrior.for_forecast(self.backbone, self.parts, forecasting(self.spec, context), name=self.spec.text,
                                      parts_id=self.parts_id)


def no_text_task(spec: PriorSpec, context: Context) -> None:
    """SDTError for a caption or qa context on a prior that cannot write text under its grammar."""
    if context.task is not None:
        raise SDTError(f"--prior {spec.text} does not write text: --task {context.task.name} needs default, "
                       "hf:DIR, gguf:FILE or a checkpoint DIR")


def forecasting(spec: PriorSpec, context: Context) -> Context:
    """The context, which a neural prior needs to hold a series and a horizon (else SDTError);
    several series only for opentslm: priors (OpenTSLM's prompts describe them all)."""
    if context.series is None or context.horizon is None:
        raise SDTError(f"--prior {spec.text} forecasts from a series: give --series FILE.csv and --horizon H")
    if context.covariates and spec.kind != "opentslm":
        raise SDTError(f"--prior {spec.text} reads one series; several (--series / --column repeated) need an "
                       "opentslm:CKPT prior")
    return context


def open_tslm(spec: PriorSpec, placement: Optional[Placement] = None) -> PriorSource:
    """A backbone (on `placement`) and its trained parts, moved to the backbone's device."""
    from specdifftree.prior.model import PriorParts
    from specdifftree.prior.opentslm import holds_opentslm

    if spec.kind == "checkpoint" and holds_opentslm(spec.arg):  # an upstream download folder
        return open_opentslm(PriorSpec("opentslm", spec.arg, spec.text, spec.backbone), placement)
    checkpoint = checkpoint_dir(spec)
    if checkpoint is None:
        backbone = open_backbone(spec, placement)
        parts = PriorParts.fresh(backbone.vocab_size, spec.text)
    else:
        if holds_opentslm(checkpoint):  # `sdt convert opentslm` output, or a `train-prior --variant sp` run
            return open_opentslm(PriorSpec("opentslm", str(checkpoint), spec.text, spec.backbone), placement)
        parts = PriorParts.load(checkpoint)
        ref = parse_prior(spec.backbone or parts.backbone_ref)
        if parts.projector is not None and ref.kind == "gguf":
            from specdifftree.prior.backbones.llamacpp import SOFT_PROMPT_NEEDS_HF

            raise SDTError(f"{checkpoint}: {SOFT_PROMPT_NEEDS_HF}")
        backbone = open_backbone(ref, placement)
    parts.to(getattr(backbone, "device", "cpu"))  # the encoder and head run where the model runs
    return TSLMSource(spec, backbone, parts, checkpoint=checkpoint)


@dataclass
class OpenTSLMSource:
    """An OpenTSLM checkpoint (SP: on its base LLM, LoRA merged; Flamingo: its own LLM), loaded once; `prior_for` lays out the
    upstream prompt around each context's series (prior/opentslm.py)."""

    spec: PriorSpec
    backbone: object  # prior.backbones.hf.HFBackbone
    weights: object  # prior.opentslm.OpenTSLMWeights
    builtin: Optional[BuiltinProblem] = None
    checkpoint: Optional[Path] = None  # the checkpoint file or folder read

    def prior_for(self, context: Context) -> Prior:
        from specdifftree.prior.flamingo_ckpt import forecast_prior_of

        no_text_task(self.spec, context)
        return forecast_prior_of(self.weights, self.backbone, forecasting(self.spec, context), name=self.spec.text)


def open_opentslm(spec: PriorSpec, placement: Optional[Placement] = None) -> OpenTSLMSource:
    """`opentslm:CKPT`: the checkpoint read safely, its LLM from --backbone, else the one a converted
    checkpoint records, else the one upstream's model name implies (llama-3.2-1b -> meta-llama/Llama-3.2-1B)."""
    from specdifftree.prior.flamingo_ckpt import load_opentslm, open_llm
    from specdifftree.prior.opentslm import backbone_ref_for

    weights = load_opentslm(spec.arg)  # SP or Flamingo, from the keys
    backbone = open_llm(weights, spec.backbone or backbone_ref_for(spec.arg), placement, open_backbone)
    return OpenTSLMSource(spec, backbone, weights, checkpoint=Path(spec.arg))


__all__ = ["MarkovSource", "OpenTSLMSource", "PriorSource", "TSLMSource", "load_prior", "open_backbone", "open_prior"]

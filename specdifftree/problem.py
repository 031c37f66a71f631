"""The ground floor for queries: the one place where user-facing specs become objects.

    spec = parse_prior("hf:runs/bb")                    # the one parser of --prior
    source = open_prior("default")                      # heavy parts (backbone, trained parts) load once
    prior = source.prior_for(context)                   # a Prior for one context, with its own cost meter
    queries = Queries.open("default", ["spectral"])     # prior + reward + lambda, parsed once
    problem = queries.problem(context)                  # one Problem per context, one backbone for all
    context = build_context("ETTh1.csv", "OT", horizon=24, context_length=96, end=15000)
    context = context_from_array(history, horizon=24)

Prior kinds (`PRIOR_KINDS`) carry their loader as a lazy "module:function", so a backend is imported
only when a spec names it. Built-in enumerable problems (`markov:toy3`, ...) bring their own reward
and lambda.
"""

from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol

import numpy as np

from specdifftree.data.context import Context
from specdifftree.errors import SDTError
from specdifftree.prior.backbones.base import Placement
from specdifftree.prior.base import Prior
from specdifftree.prior.markov import MarkovPrior
from specdifftree.rewards.base import RewardFn
from specdifftree.search.common import Problem, SearchResult

# --------------------------------------------------------------------------- built-in problems


@dataclass
class BuiltinProblem:
    """An enumerable problem: a Markov prior, a reward that pulls pi* far from it, and lambda.
    Usable anywhere a prior is named: `--prior markov:toy3`."""

    name: str
    prior: MarkovPrior
    reward: Callable[[str, Context], float]
    lam: float
    about: str


def count_c_reward(text: str, context: Context) -> float:
    """+1 per 'c', -0.5 per 'a': pulls towards c-rich text the prior finds unlikely."""
    return text.count("c") - 0.5 * text.count("a")


def _toy3() -> BuiltinProblem:
    # 3 tokens + EOS, max_len 4: 121 sequences. The prior prefers 'a' and sticky chains.
    prior = MarkovPrior.from_dict(
        {
            "vocab": ["a", "b", "c", "<eos>"],
            "eos": 3,
            "max_len": 4,
            "initial": [0.6, 0.25, 0.1, 0.05],
            "transition": [
                [0.55, 0.2, 0.05, 0.2],
                [0.3, 0.4, 0.1, 0.2],
                [0.2, 0.2, 0.3, 0.3],
                [0.25, 0.25, 0.25, 0.25],
            ],
        },
        name="toy3",
    )
    return BuiltinProblem("toy3", prior, count_c_reward, 1.0, "3 tokens + EOS, max_len 4, reward #c - 0.5 #a")


def _deep2() -> BuiltinProblem:
    # 2 tokens + EOS, max_len 8: 511 sequences, a longer horizon with rare rewarded tails.
    prior = MarkovPrior.from_dict(
        {
            "vocab": ["a", "c", "<eos>"],
            "eos": 2,
            "max_len": 8,
            "initial": [0.8, 0.15, 0.05],
            "transition": [[0.8, 0.1, 0.1], [0.5, 0.4, 0.1], [0.5, 0.25, 0.25]],
        },
        name="deep2",
    )
    return BuiltinProblem("deep2", prior, count_c_reward, 1.0, "2 tokens + EOS, max_len 8, reward #c - 0.5 #a")


BUILTIN_PROBLEMS: dict[str, Callable[[], BuiltinProblem]] = {"toy3": _toy3, "deep2": _deep2}


# --------------------------------------------------------------------------- prior specs


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
    "markov": PriorKind("specdifftree.problem:open_markov",
                        "markov:FILE.json, or a built-in problem name (see `sdt bench exactness --list`)"),
    "default": PriorKind("specdifftree.problem:open_tslm", "default: the embedded default backbone", backbone=True),
    "hf": PriorKind("specdifftree.problem:open_tslm", "hf:ID_OR_PATH: a transformers causal LM", backbone=True),
    "gguf": PriorKind("specdifftree.problem:open_tslm", "gguf:FILE: a GGUF model through llama.cpp", backbone=True),
    "checkpoint": PriorKind("specdifftree.problem:open_tslm",
                            "DIR: a prior checkpoint, or a `sdt train-prior --out` run directory"),
    "opentslm": PriorKind("specdifftree.problem:open_opentslm",
                          "opentslm:CKPT: an OpenTSLM-SP checkpoint (model_checkpoint.pt, its folder, or "
                          "`sdt convert opentslm` output), with --backbone hf:LLM_DIR"),
}
BACKBONE_KINDS = ("opentslm", "checkpoint")  # the kinds --backbone applies to


def parse_prior(spec: str, backbone: Optional[str] = None) -> PriorSpec:
    """The one parser of a prior spec (also of a checkpoint's backbone reference), with --backbone
    where given (opentslm: and checkpoint specs only). SDTError, with a "did you mean", on anything else."""
    spec = str(spec)
    kind, sep, arg = spec.partition(":")
    if spec == "default":
        parsed = PriorSpec("default", "", spec)
    elif sep and arg and kind in PRIOR_KINDS and kind not in ("default", "checkpoint"):
        parsed = PriorSpec(kind, arg, spec)
    elif Path(spec).is_dir():
        parsed = PriorSpec("checkpoint", spec, spec)
    else:
        known = "; ".join(k.usage for k in PRIOR_KINDS.values())
        hint = difflib.get_close_matches(kind, PRIOR_KINDS, n=1)
        did = f" Did you mean '{hint[0]}'?" if hint and hint[0] != kind else ""
        raise SDTError(f"unknown prior '{spec}'.{did} Known: {known}")
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


class PriorSource(Protocol):
    """An opened prior spec: what is heavy (a backbone, trained parts) is loaded once; each context
    gets its own Prior with its own cost meter."""

    spec: PriorSpec
    builtin: Optional[BuiltinProblem]

    def prior_for(self, context: Context) -> Prior: ...


def open_prior(spec: str | PriorSpec, placement: Optional[Placement] = None, backbone: Optional[str] = None) -> PriorSource:
    """Load what `spec` names, through its kind's loader; a model runs on `placement`'s device and in
    its dtype (default: auto). backbone: --backbone (see PriorSpec)."""
    parsed = spec if isinstance(spec, PriorSpec) else parse_prior(spec, backbone)
    module, _, fn = PRIOR_KINDS[parsed.kind].loader.partition(":")
    return getattr(importlib.import_module(module), fn)(parsed, placement)


def load_prior(spec: str, context: Optional[Context] = None, placement: Optional[Placement] = None) -> Prior:
    """The prior `spec` for one context (a shortcut for `open_prior(spec).prior_for(context)`)."""
    return open_prior(spec, placement).prior_for(context or Context())


# --------------------------------------------------------------------------- markov priors


@dataclass
class MarkovSource:
    spec: PriorSpec
    prior: MarkovPrior
    builtin: Optional[BuiltinProblem] = None

    def prior_for(self, context: Context) -> Prior:
        return self.prior.metered()


def open_markov(spec: PriorSpec, placement: Optional[Placement] = None) -> MarkovSource:
    """A Markov prior (computed on the host: `placement` does not apply)."""
    if spec.arg in BUILTIN_PROBLEMS:
        builtin = BUILTIN_PROBLEMS[spec.arg]()
        return MarkovSource(spec, builtin.prior, builtin)
    return MarkovSource(spec, MarkovPrior.from_json(spec.arg))


# --------------------------------------------------------------------------- neural priors


def open_backbone(ref: str | PriorSpec, placement: Optional[Placement] = None):
    """A Backbone from a backbone reference: "default", "hf:ID_OR_PATH" or "gguf:FILE", on the device
    and in the dtype of `placement` (default: auto; llama.cpp reads only its n_gpu_layers)."""
    spec = ref if isinstance(ref, PriorSpec) else parse_prior(ref)
    if not PRIOR_KINDS[spec.kind].backbone:
        raise SDTError(f"unknown backbone '{spec.text}': use default, hf:ID_OR_PATH or gguf:FILE")
    placement = (placement or Placement()).validate()
    if spec.kind == "default":
        from specdifftree.prior.backbones.hf import HFBackbone
        from specdifftree.prior.default import ensure_default_backbone

        return HFBackbone.from_pretrained(str(ensure_default_backbone()), placement)
    if spec.kind == "hf":
        from specdifftree.prior.backbones.hf import HFBackbone

        return HFBackbone.from_pretrained(spec.arg, placement)
    from specdifftree.prior.backbones.llamacpp import LlamaCppBackbone

    # n_seq_max: the most llama.cpp allows, fewer evictions
    return LlamaCppBackbone(spec.arg, n_seq_max=256, n_gpu_layers=placement.gpu_layers())


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


@dataclass
class TSLMSource:
    """A backbone and its trained parts, loaded once; `prior_for` builds the per-context prompt,
    grammar and bias."""

    spec: PriorSpec
    backbone: object  # prior.backbones.base.Backbone
    parts: object  # prior.model.PriorParts
    builtin: Optional[BuiltinProblem] = None
    parts_id: str = ""  # parts.fingerprint(), hashed once for every context

    def prior_for(self, context: Context) -> Prior:
        from specdifftree.prior.model import TSLMPrior

        self.parts_id = self.parts_id or self.parts.fingerprint()
        return TSLMPrior.for_forecast(self.backbone, self.parts, forecasting(self.spec, context), name=self.spec.text,
                                      parts_id=self.parts_id)


def forecasting(spec: PriorSpec, context: Context) -> Context:
    """The context, which a neural prior needs to hold a series and a horizon (else SDTError)."""
    if context.series is None or context.horizon is None:
        raise SDTError(f"--prior {spec.text} forecasts from a series: give --series FILE.csv and --horizon H")
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
    return TSLMSource(spec, backbone, parts)


@dataclass
class OpenTSLMSource:
    """An OpenTSLM-SP checkpoint on its base LLM (LoRA merged), loaded once; `prior_for` lays out the
    upstream prompt around each context's series (prior/opentslm.py)."""

    spec: PriorSpec
    backbone: object  # prior.backbones.hf.HFBackbone
    weights: object  # prior.opentslm.OpenTSLMWeights
    builtin: Optional[BuiltinProblem] = None

    def prior_for(self, context: Context) -> Prior:
        from specdifftree.prior.opentslm import forecast_prior

        return forecast_prior(self.weights, self.backbone, forecasting(self.spec, context), name=self.spec.text)


def open_opentslm(spec: PriorSpec, placement: Optional[Placement] = None) -> OpenTSLMSource:
    """`opentslm:CKPT`: the checkpoint read safely, its LLM from --backbone, else the one a converted
    checkpoint records, else the one upstream's model name implies (llama-3.2-1b -> meta-llama/Llama-3.2-1B)."""
    from specdifftree.prior.opentslm import OpenTSLMWeights, attach, backbone_ref_for

    weights = OpenTSLMWeights.load(spec.arg)
    backbone = open_backbone(spec.backbone or backbone_ref_for(spec.arg), placement)
    return OpenTSLMSource(spec, attach(weights, backbone), weights)


# --------------------------------------------------------------------------- contexts


def build_context(series: Optional[str], column: Optional[str], horizon: Optional[int],
                  context_length: Optional[int], end: Optional[int] = None) -> Context:
    """The query context from a CSV file: the history (the `context_length` points before index
    `end`), the forecast horizon, the codec numbers are written with, and the true continuation
    where the file has it (for evaluation metrics only)."""
    if horizon is not None and horizon < 1:
        raise SDTError("--horizon must be >= 1")
    if series is None:
        if column is not None or context_length is not None or end is not None:
            raise SDTError("--column, --context-length and --end need --series FILE.csv")
        return Context(horizon=horizon)
    from specdifftree.data.series import read_csv_column

    full = read_csv_column(series, column)
    end = len(full) if end is None else end
    if not 4 <= end <= len(full):
        raise SDTError(f"--end must be in [4, {len(full)}] for {series}")
    if context_length is not None and context_length < 4:
        raise SDTError("--context-length must be at least 4")
    history = full[max(0, end - (context_length or end)):end]
    target = full[end:end + horizon] if horizon else None
    return context_from_array(history, horizon, target if target is not None and len(target) == horizon else None,
                              meta={"series_file": str(series), "column": column, "end": end},
                              name=f"series {series}")


def context_from_array(history, horizon: Optional[int] = None, target=None, meta: Optional[dict] = None,
                       name: str = "the history") -> Context:
    """A forecasting context from an array: the history [L] (at least 4 finite values), the horizon,
    the number codec scaled to the history, and the true continuation [H] when known."""
    from specdifftree.data.prompts import forecast_codec
    from specdifftree.data.series import check_series

    if horizon is not None and horizon < 1:
        raise SDTError("the horizon must be >= 1")
    x = check_series(np.asarray(history, dtype=np.float64).ravel(), name, min_len=4)
    if target is not None:
        target = np.asarray(target, dtype=np.float64).ravel()
        if horizon is not None and len(target) != horizon:
            raise SDTError(f"the target holds {len(target)} values, the horizon is {horizon}")
    return Context(series=x, horizon=horizon, codec=forecast_codec(x), target=target, meta=dict(meta or {}))


# --------------------------------------------------------------------------- queries


@dataclass
class Queries:
    """A prior, a reward and lambda, parsed and loaded once; `problem(context)` for each context."""

    source: PriorSource
    reward: RewardFn
    lam: float
    rewards: tuple[str, ...] = ()  # the reward specs as given (empty: a built-in problem's own)

    @classmethod
    def open(cls, prior: str | PriorSource, rewards: list[str] | tuple[str, ...] = (),
             lam: Optional[float] = None, backbone: Optional[str] = None,
             placement: Optional[Placement] = None) -> "Queries":
        """lam None: the built-in problem's lambda, else 1.0. backbone: --backbone (see PriorSpec).
        placement: the model's device and dtype (when `prior` is a spec; default auto)."""
        prior = os.fspath(prior) if isinstance(prior, os.PathLike) else prior
        source = open_prior(prior, placement, backbone) if isinstance(prior, (str, PriorSpec)) else prior
        builtin = source.builtin
        if rewards:
            from specdifftree.rewards import parse_reward

            reward = parse_reward(list(rewards))
        elif builtin is not None:
            reward = builtin.reward
        else:
            raise SDTError("--reward is required (e.g. --reward spectral, --reward plugin.py:fn)")
        lam = lam if lam is not None else (builtin.lam if builtin is not None else 1.0)
        return cls(source, reward, float(lam), tuple(rewards))

    def problem(self, context: Optional[Context] = None) -> Problem:
        context = context or Context()
        return Problem(self.source.prior_for(context), self.reward, context)


def build_problem(prior: str, rewards: list[str], context: Context,
                  backbone: Optional[str] = None, placement: Optional[Placement] = None) -> tuple[Problem, Optional[float]]:
    """One problem, and the lambda a built-in problem suggests (None otherwise)."""
    queries = Queries.open(prior, rewards, backbone=backbone, placement=placement)
    return queries.problem(context), (queries.source.builtin.lam if queries.source.builtin else None)


# --------------------------------------------------------------------------- records


def forecast_record(result: SearchResult, context: Context, season: Optional[int] = None) -> tuple[list[dict], dict]:
    """Samples as JSON with their parsed forecast ("values"), and forecast metrics: Spec-W1 of each
    forecast against the history, and, where the true continuation is known, CRPS / MASE / MSE of
    the samples' median, next to the MASE of the naive forecast (last value repeated) and, with a
    `season`, of the seasonal naive, on the same target. MASE is scaled by the history's
    seasonal-naive MAE at lag `season` (1 without one)."""
    from specdifftree.rewards import crps, mase, mse, spec_w1

    samples = [s.to_dict() for s in result.samples]
    if context.horizon is None or context.series is None:
        return samples, {}
    codec = context.codec
    for d in samples:
        d["values"] = [float(v) for v in codec.values_for(d["text"], context.horizon)]
    full = forecast_matrix(samples, context.horizon)
    metrics: dict = {"well_formed": len(full) / max(len(samples), 1)}
    if len(full):
        metrics["spec_w1"] = float(np.mean([spec_w1(v, context.series) for v in full]))
        if context.target is not None:
            point = np.median(full, axis=0)
            lag = season if season is not None and len(context.series) > season else 1
            metrics.update(crps=crps(full, context.target), mse=mse(point, context.target),
                           mase=mase(point, context.target, context.series, season=lag),
                           **reference_mase(context, lag, season))
    return samples, metrics


def forecast_matrix(samples: list[dict], horizon: int) -> np.ndarray:
    """The well-formed samples' forecasts (those with `horizon` values).  -> [S, H]"""
    return np.array([d["values"] for d in samples if len(d.get("values") or ()) == horizon]).reshape(-1, horizon)


def reference_mase(context: Context, lag: int, season: Optional[int]) -> dict:
    """{"mase_naive": ..., "mase_seasonal_naive": ... (with a season the history exceeds)} on context.target."""
    from specdifftree.rewards import mase
    from specdifftree.search.reference import naive_forecast, seasonal_naive_forecast

    x, H = np.asarray(context.series, dtype=np.float64), int(context.horizon)
    out = {"mase_naive": mase(naive_forecast(x, H).point, context.target, x, season=lag)}
    if season is not None and len(x) > season:
        out["mase_seasonal_naive"] = mase(seasonal_naive_forecast(x, H, season).point, context.target, x, season=lag)
    return out


# --------------------------------------------------------------------------- provenance


def weight_files(spec: str) -> dict[str, Optional[Path]]:
    """The files holding a prior's weights, for run records: {"backbone": the backbone's weights
    (model.safetensors, a GGUF file, a Markov JSON), "prior": the trained parts' weights.safetensors}.
    None where there is no local file (a built-in Markov problem, a hub id, untrained parts).
    `default` builds the default backbone if it is not built yet."""
    parsed = parse_prior(spec)
    if parsed.kind == "markov":
        return {"backbone": Path(parsed.arg) if Path(parsed.arg).is_file() else None, "prior": None}
    checkpoint = checkpoint_dir(parsed)
    if checkpoint is None:
        return {"backbone": backbone_file(parsed), "prior": None}
    import json

    ref = parse_prior(json.loads((checkpoint / "config.json").read_text()).get("backbone", ""))
    return {"backbone": backbone_file(ref), "prior": checkpoint / "weights.safetensors"}


def backbone_file(ref: PriorSpec) -> Optional[Path]:
    """The weights file of a backbone reference (default, hf:DIR, gguf:FILE), or None (a hub id)."""
    if ref.kind == "default":
        from specdifftree.prior.default import ensure_default_backbone

        return ensure_default_backbone(progress=False) / "model.safetensors"
    path = Path(ref.arg)
    if ref.kind == "hf" and (path / "model.safetensors").is_file():
        return path / "model.safetensors"
    return path if ref.kind == "gguf" and path.is_file() else None


__all__ = ["BUILTIN_PROBLEMS", "BuiltinProblem", "OpenTSLMSource", "PRIOR_KINDS", "PriorKind", "PriorSource", "PriorSpec", "Queries",
           "build_context", "build_problem", "checkpoint_dir", "context_from_array", "forecast_matrix", "forecast_record",
           "load_prior", "open_backbone", "open_prior", "parse_prior", "weight_files"]

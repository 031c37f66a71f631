"""The public Python API (re-exported by `specdifftree/__init__.py`); the `sdt` CLI is a thin layer over it.

    import specdifftree as sdt

    prior = sdt.open_prior("default")                         # load a prior once (backbone + trained parts)
    context = sdt.context_from_array(history, horizon=24)     # a query from a numpy array
    result = sdt.search(prior, context, reward="spectral", method="dts", budget=20_000)
    samples, metrics = sdt.forecast_record(result, context)   # forecasts as numbers, CRPS / MASE / Spec-W1
    sdt.train_flow(["buf.safetensors"], "default", ["spectral"], "runs/flow")   # S-ADT flow network
    sdt.run_experiment("experiments/sadt_table.yaml", preset="smoke")          # a grid of cells
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from specdifftree.amortize.pipeline import collect_buffer, train_flow
from specdifftree.amortize.train import AmortizeConfig
from specdifftree.data.context import Context
from specdifftree.problem import (PriorSource, PriorSpec, Queries, build_context, context_from_array, forecast_record,
                                  open_prior)
from specdifftree.search.common import Problem, SearchConfig, SearchResult
from specdifftree.search.registry import METHODS, run_search, uses_flow


def search(prior: Union[str, PriorSpec, PriorSource, Queries], context: Optional[Context] = None, *,
           reward: Union[str, Sequence[str]] = (), method: str = "dts", budget: Optional[int] = None,
           lam: Optional[float] = None, progress: bool = False, **options) -> SearchResult:
    """Search or sample from pi*(x) ~ p(x|c) exp(lam r(x)) with one method.

    prior:   a spec ("default", "hf:DIR", "markov:toy3", ...), an opened prior (`open_prior`, so a
             model loads once for many queries), or `Queries` (prior, reward and lambda together).
    reward:  one spec or several (summed), as `sdt search --reward`; a built-in problem brings its own.
    budget:  cap on forward tokens; lam: inverse temperature (default: the built-in problem's, else 1).
    options: any other SearchConfig field (iterations, samples, seed, flow, alpha, ...).
    """
    if isinstance(prior, Queries):
        queries = prior
    else:
        rewards = [reward] if isinstance(reward, str) else list(reward)
        queries = Queries.open(prior, rewards, lam)
    cfg = SearchConfig(lam=queries.lam if lam is None else lam, budget=budget, **options).validate()
    return search_problem(queries.problem(context), method, cfg, rewards=list(queries.rewards), progress=progress)


def search_problem(problem: Problem, method: str, cfg: SearchConfig, rewards: Sequence[str] = (),
                   progress: bool = False) -> SearchResult:
    """Run `method` on a built problem. A flow network (`cfg.flow`) must have been trained for the
    same reward specs `rewards` (checked before anything runs)."""
    if cfg.flow is not None and uses_flow(method, cfg):
        from specdifftree.amortize.flow import check_reward

        check_reward(cfg.flow, list(rewards))
    return run_search(problem, method, cfg, show_progress=progress)


def convert_opentslm(ckpt: Union[str, Path], out_dir: Union[str, Path], backbone: Optional[str] = None) -> Path:
    """An upstream OpenTSLM-SP checkpoint (model_checkpoint.pt or its folder) -> our pickle-free
    checkpoint in `out_dir` (what `sdt convert opentslm` does). The pickle is read once, safely;
    the weights are checked against the base LLM (`backbone`, "hf:LLM_DIR"; default: from the
    model name), which the checkpoint records."""
    from specdifftree.prior.opentslm import OpenTSLMWeights, attach, backbone_ref_for
    from specdifftree.problem import absolute_spec, open_backbone

    weights = OpenTSLMWeights.load(ckpt)
    ref = backbone or backbone_ref_for(str(ckpt))
    llm = attach(weights, open_backbone(ref))
    return weights.save(out_dir, absolute_spec(ref), llm.vocab_size)


def run_experiment(config: Union[str, Path], preset: Optional[str] = None, out_dir: Union[str, Path, None] = None,
                   prior: Optional[str] = None, wandb: bool = False, progress: bool = True, log=print,
                   ray: Optional[str] = None):
    """Run every unfinished cell of an experiment file (what `sdt experiment run` does); returns a
    RunSummary (out_dir, ran, skipped, unavailable, results rows). `ray`: None (here, serially),
    "local", "auto" or "ray://HOST:PORT" (each cell a Ray task)."""
    from specdifftree.experiments.config import load_experiment
    from specdifftree.experiments.runner import default_out
    from specdifftree.experiments.runner import run_experiment as run_grid

    cfg = load_experiment(config, preset, prior=prior)
    return run_grid(cfg, out_dir or default_out(cfg), wandb=wandb, progress=progress, log=log, ray=ray)


__all__ = ["AmortizeConfig", "Context", "METHODS", "PriorSource", "Queries", "SearchConfig", "SearchResult",
           "build_context", "collect_buffer", "context_from_array", "convert_opentslm", "forecast_record", "open_prior",
           "run_experiment", "search", "search_problem", "train_flow"]

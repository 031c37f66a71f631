"""The public Python API (re-exported by `specdifftree/__init__.py`); the `sdt` CLI is a thin layer over it.

    import specdifftree as sdt

    prior = sdt.open_prior("default")                         # load a prior once (backbone + trained parts)
    context = sdt.context_from_array(history, horizon=24)     # a query from a numpy array
    context = sdt.context_from_array(xyz[:, 0], covariates=[xyz[:, 1], xyz[:, 2]], task="qa", fs=52,
                                     question="What is the person doing?", choices="walking,standing")
    result = sdt.generate(prior, context, reward="spectral", method="dts", budget=20_000)
    samples, metrics = sdt.forecast_record(result, context)   # forecasts as numbers, CRPS / MASE / Spec-W1
    sdt.train_flow(["buf.safetensors"], "default", ["spectral"], "runs/flow")   # S-ADT flow network
    sdt.run_experiment("experiments/sadt_table.yaml", preset="smoke")          # a grid of cells

`generate` returns the SearchResult; `search_run` (what `sdt search` calls) also keeps the problem
and config, and makes the `--out` record, the tree, buffer and plot files from them. A problem
built by hand runs with `run_search(problem, method, cfg)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Optional, Sequence, Union

from specdifftree.amortize.pipeline import collect_buffer, train_flow
from specdifftree.amortize.train import AmortizeConfig
from specdifftree.data.context import Context, build_context, context_from_array, task_context
from specdifftree.data.tasks import Task, make_task
from specdifftree.experiments.metrics import forecast_matrix, forecast_record
from specdifftree.prior.backbones.base import Placement
from specdifftree.prior.sources import PriorSource, open_prior
from specdifftree.prior.tasks import text_default
from specdifftree.prior.spec import PriorSpec
from specdifftree.problem import Queries
from specdifftree.search.common import Problem, SearchConfig, SearchResult
from specdifftree.search.registry import METHODS, get_method, run_search

PriorLike = Union[str, PriorSpec, PriorSource, Queries]


@dataclass
class SearchRun:
    """One query searched with one method: the opened queries, the problem (its prior holds the
    cost meter), the validated config and the result."""

    queries: Queries
    problem: Problem
    cfg: SearchConfig
    method: str
    result: SearchResult
    backbone: Optional[str] = None  # --backbone as given

    @cached_property
    def forecast(self) -> tuple[list[dict], dict]:
        """The samples as JSON with their parsed forecasts, and the forecast metrics (`forecast_record`)."""
        return forecast_record(self.result, self.problem.context, season=self.cfg.season)

    @cached_property
    def text(self) -> tuple[list[dict], dict]:
        """A caption or qa run's samples as JSON, each with its answer (qa) or fact accuracy per
        level (caption), and the task metrics (`data.tasks.text_metrics`)."""
        from specdifftree.data.tasks import text_metrics

        samples = [s.to_dict() for s in self.result.samples]
        per, metrics = text_metrics([d["text"] for d in samples], self.problem.context)
        return [{**d, **p} for d, p in zip(samples, per)], metrics

    def record(self) -> dict:
        """What `sdt search --out` writes: the result, each sample with its parsed forecast, the
        forecast metrics (a caption or qa run: each sample's fact accuracy or answer, the task and its
        metrics), the prior, the weights it ran with and the options.

        weights: {"sha256": the prior's weights identity (Prior.weights_sha256), "checkpoint": the
        trained prior the spec resolved to (None: the backbone alone), "installed_prior": whether
        `default` meant the prior `sdt prior install` put in place}."""
        source = self.queries.source
        task = self.problem.context.task
        if task is None:
            samples, metrics = self.forecast
            found = {"samples": samples, "forecast_metrics": metrics}
        else:
            samples, metrics = self.text
            found = {"samples": samples, "task": task.describe(), "task_metrics": metrics}
        checkpoint = getattr(source, "checkpoint", None)
        weights = {"sha256": self.problem.prior.weights_sha256(),
                   "checkpoint": None if checkpoint is None else str(checkpoint),
                   "installed_prior": source.spec.text == "default" and checkpoint is not None}
        from specdifftree.sensorlm.reward import reward_costs

        costs = reward_costs(self.queries.reward)  # a learned reward's encoder calls, apart from forward_tokens
        return {**self.result.to_dict(), **found,
                "prior": self.problem.prior.describe(), "weights": weights,
                "config": {"prior": source.spec.text, "backbone": self.backbone, "reward": list(self.queries.rewards),
                           **self.cfg.to_dict()}, **({"reward_cost": costs} if costs else {})}

    def save_tree(self, path: Union[str, Path]) -> None:
        """The search tree as GraphML (tree methods only)."""
        from specdifftree.errors import SDTError
        from specdifftree.search.tree import save_graphml

        if self.result.tree is None:
            raise SDTError(f"--save-tree needs a tree method (dts, dts-star, mcts), not '{self.method}'")
        save_graphml(self.result.tree, str(path))

    def save_buffer(self, path: Union[str, Path]):
        """Append the finished tree to the search buffer at `path` (for `sdt amortize`)."""
        from specdifftree.amortize.buffer import save_search

        return save_search(str(path), self.problem, self.result, prior=self.queries.source.spec.text,
                           rewards=list(self.queries.rewards), lam=self.cfg.lam, cfg=self.cfg)

    def plot(self, path: Union[str, Path]) -> None:
        """The forecast as a PNG: history, the samples' fan and median, the truth when known."""
        from specdifftree.experiments.plots import plot_forecast

        context = self.problem.context
        first = {k: v[0] if isinstance(v, list) else v for k, v in context.meta.items()}  # several series: the forecast one
        title = f"{Path(first['series_file']).name} {first.get('column') or ''} end={first['end']}: {self.method}"
        plot_forecast(context.series, context.target, forecast_matrix(self.forecast[0], context.horizon), context.horizon,
                      str(path), title)


def search_run(prior: PriorLike, context: Optional[Context] = None, *, reward: Union[str, Sequence[str]] = (),
               method: str = "dts", lam: Optional[float] = None, backbone: Optional[str] = None,
               placement: Optional[Placement] = None, progress: bool = False, **options) -> SearchRun:
    """Search or sample from pi*(x) ~ p(x|c) exp(lam r(x)) with one method (what `sdt search` does).

    prior:   a spec ("default", "hf:DIR", "markov:toy3", ...), an opened prior (`open_prior`, so a
             model loads once for many queries), or `Queries` (prior, reward and lambda together).
             "default" on a caption or qa context: the backbone that writes text, once built
             (prior/tasks.py's text_default).
    reward:  one spec or several (summed), as `sdt search --reward`; a built-in problem brings its own.
    lam:     inverse temperature (default: the built-in problem's, else 1). backbone, placement: as
             for `open_prior` (when `prior` is a spec).
    options: any SearchConfig field (budget, iterations, samples, seed, flow, alpha, ...).
    """
    check_search(method, lam, options)  # before loading anything
    queries = opened(text_default(prior, context) if backbone is None else prior, reward, lam, backbone, placement)
    cfg = SearchConfig(lam=queries.lam if lam is None else lam, **options).validate()
    problem = queries.problem(context)
    result = run_search(problem, method, cfg, show_progress=progress)
    return SearchRun(queries, problem, cfg, method, result, backbone)


def search_many(prior: PriorLike, contexts: Sequence[Context], *, reward: Union[str, Sequence[str]] = (),
                method: str = "dts", lam: Optional[float] = None, backbone: Optional[str] = None,
                placement: Optional[Placement] = None, seeds: Optional[Sequence[int]] = None,
                max_rows: Optional[int] = None, max_active: Optional[int] = None, progress: bool = False,
                **options) -> list[SearchRun]:
    """`search_run` for many contexts at once: their searches advance in lockstep, each round's rows of
    every query in one backbone forward (search/many.py). Each SearchRun is what `search_run(prior,
    context, seed=...)` gives alone (same samples; log-probs up to float rounding on a neural prior).
    seeds: one per context (default: `options`' seed for every one). max_rows: rows per forward
    (default 256 on the host, 2048 on a GPU); max_active: queries alive at once (default: all).
    The other arguments as for `search_run`."""
    from dataclasses import replace

    from specdifftree.progress import progress as progress_bar
    from specdifftree.search.many import run_many

    check_search(method, lam, options)
    queries = opened(text_default(prior, contexts[0] if contexts else None) if backbone is None else prior, reward,
                     lam, backbone, placement)
    cfg = SearchConfig(lam=queries.lam if lam is None else lam, **options).validate()
    cfgs = [cfg if seeds is None else replace(cfg, seed=int(s)) for s in (seeds if seeds is not None else contexts)]
    problems = [queries.problem(c) for c in contexts]
    with progress_bar(len(problems), method, "queries", enabled=progress) as bar:
        results = run_many(problems, method, cfgs, max_rows=max_rows, max_active=max_active, progress=bar.update)
    return [SearchRun(queries, p, c, method, r, backbone) for p, c, r in zip(problems, cfgs, results)]


def opened(prior: PriorLike, reward: Union[str, Sequence[str]], lam: Optional[float], backbone: Optional[str],
           placement: Optional[Placement]) -> Queries:
    """`prior` as Queries: as it is, or opened with the reward spec(s) and lambda."""
    if isinstance(prior, Queries):
        return prior
    rewards = [reward] if isinstance(reward, str) else list(reward)
    return Queries.open(prior, rewards, lam, backbone=backbone, placement=placement)


def check_search(method: str, lam: Optional[float], options: dict) -> None:
    """A search's method, options and flow directory, checked without loading a prior (SDTError)."""
    from specdifftree import validate

    spec = get_method(method)
    cfg = SearchConfig(lam=1.0 if lam is None else lam, **options).validate()  # lambda: the built-in's is valid
    if spec.uses_flow:
        validate.flow_dir(cfg.flow, f"--method {method}")
    elif method == "smc" and cfg.potential == "flow":
        validate.flow_dir(cfg.flow, "--potential flow")


def generate(prior: PriorLike, context: Optional[Context] = None, *, reward: Union[str, Sequence[str]] = (),
             method: str = "dts", budget: Optional[int] = None, lam: Optional[float] = None,
             progress: bool = False, **options) -> SearchResult:
    """The samples of `method` from pi*(x) ~ p(x|c) exp(lam r(x)) for one context: `search_run`'s
    result. budget: cap on forward tokens; the other arguments as for `search_run`."""
    return search_run(prior, context, reward=reward, method=method, lam=lam, progress=progress, budget=budget,
                      **options).result


def train_prior(stage: str = "all", preset: str = "default", backbone: str = "default",
                out_dir: Union[str, Path] = "runs/prior", *, variant: str = "bias", lora: bool = False,
                resume: bool = False, seed: int = 0, wandb: bool = True, data_dir: Union[str, Path, None] = None,
                upstream: bool = False, placement: Optional[Placement] = None) -> dict:
    """Train the prior's encoder and logit-bias head (variant "bias") or soft-prompt projector ("sp")
    stage by stage on a frozen backbone (what `sdt train-prior` does). stage: "all" or one stage
    name; preset: configs/train/NAME.yaml; data_dir: real datasets (default: ../shared/data when it
    exists). Returns the summary per stage ({} on torchrun ranks other than 0)."""
    from specdifftree import validate
    from specdifftree.config import preset_names
    from specdifftree.data.example import STAGES

    stages = list(STAGES) if stage == "all" else [stage]
    validate.names(stages, ["all", *STAGES], "stage")  # all checked before torch and the backbone load
    validate.names([preset], preset_names("train"), "train preset")
    validate.prior_spec(backbone, option="--backbone")
    validate.output_path(out_dir, "--out", directory=True)
    if data_dir is not None:
        validate.input_dir(data_dir, "--data-dir")

    from specdifftree.paths import default_data_dir
    from specdifftree.train.config import TrainConfig
    from specdifftree.train.curriculum import train_prior as train_stages

    cfg = TrainConfig.from_name(preset).for_variant(variant, lora)
    return train_stages(stages, cfg, backbone, Path(out_dir), seed=seed, resume=resume, wandb=wandb,
                        data_dir=data_dir or default_data_dir(), upstream=upstream, placement=placement)


def convert_opentslm(ckpt: Union[str, Path], out_dir: Union[str, Path], backbone: Optional[str] = None) -> Path:
    """An upstream OpenTSLM checkpoint, SP or Flamingo (model_checkpoint.pt or its folder) -> our pickle-free
    checkpoint in `out_dir` (what `sdt convert opentslm` does). The pickle is read once, safely;
    the weights are checked against the base LLM (`backbone`, "hf:LLM_DIR"; default: from the
    model name), which the checkpoint records."""
    from specdifftree.prior.flamingo_ckpt import convert
    from specdifftree.prior.opentslm import backbone_ref_for
    from specdifftree.prior.sources import open_backbone

    return convert(ckpt, out_dir, backbone or backbone_ref_for(str(ckpt)), open_backbone)


def run_experiment(config: Union[str, Path], preset: Optional[str] = None, out_dir: Union[str, Path, None] = None,
                   prior: Optional[str] = None, wandb: bool = False, progress: bool = True, log=print,
                   ray: Optional[str] = None):
    """Run every unfinished cell of an experiment file (what `sdt experiment run` does); returns a
    RunSummary (out_dir, ran, skipped, unavailable, results rows). `ray`: None (here, serially),
    "local", "auto" or "ray://HOST:PORT" (each cell a Ray task)."""
    from specdifftree import validate
    from specdifftree.experiments.config import load_experiment
    from specdifftree.experiments.datasets import data_root
    from specdifftree.experiments.runner import default_out
    from specdifftree.experiments.runner import run_experiment as run_grid

    cfg = load_experiment(config, preset, prior=prior)
    out_dir = out_dir or default_out(cfg)
    validate.reward_specs(validate.prior_spec(cfg.prior, cfg.backbone), cfg.reward)  # before torch and any cell
    validate.output_path(out_dir, "--out", directory=True)
    data_root(cfg.data_root)
    return run_grid(cfg, out_dir, wandb=wandb, progress=progress, log=log, ray=ray)


__all__ = ["AmortizeConfig", "Context", "METHODS", "Placement", "PriorSource", "Queries", "SearchConfig", "SearchResult",
           "SearchRun", "Task", "build_context", "collect_buffer", "context_from_array", "convert_opentslm",
           "forecast_record", "generate", "make_task", "open_prior", "run_experiment", "run_search", "search_many",
           "search_run", "task_context", "train_flow", "train_prior"]

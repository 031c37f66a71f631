"""The S-ADT loop as Python calls (what `sdt search --save-buffer` and `sdt amortize` do, for runners).

    from specdifftree.amortize.pipeline import collect_buffer, train_flow
    from specdifftree.search.api import build_problem, run_search
    from specdifftree.search.common import SearchConfig

    collect_buffer("runs/buf.safetensors", "default", ["spectral"], train_contexts,   # list of Context
                   SearchConfig(iterations=200, lam=1.0))
    summary = train_flow(["runs/buf.safetensors"], "default", ["spectral"], "runs/flow", lam=1.0)
    problem, _ = build_problem("default", ["spectral"], eval_context)
    result = run_search(problem, "sadt", SearchConfig(flow="runs/flow", lam=1.0, iterations=50))

Contexts for training should come from the flow-train part of `data/splits.py` (ETT: 60-75% by time),
evaluation contexts from the eval part.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from specdifftree.errors import SDTError
from specdifftree.rewards.base import Context
from specdifftree.search.common import Problem, SearchConfig


def open_problems(prior: str, rewards: list[str], contexts: list[Context]) -> tuple[list[Problem], Optional[float]]:
    """One problem per context, and the lambda a built-in problem suggests (or None). A neural prior
    opens its backbone once and shares it (its cost counter too) across the contexts."""
    from specdifftree.prior.registry import load_prior
    from specdifftree.search.api import build_problem

    first, lam = build_problem(prior, rewards, contexts[0])
    backbone = getattr(first.prior, "backbone", None)
    problems = [first]
    for context in contexts[1:]:
        if backbone is None:
            problems.append(build_problem(prior, rewards, context)[0])
        else:
            problems.append(Problem(load_prior(prior, context, backbone=backbone), first.reward, context))
    return problems, lam


def collect_buffer(path: str | Path, prior: str, rewards: list[str], contexts: list[Context], cfg: SearchConfig,
                   method: str = "dts", progress: bool = False) -> list[dict]:
    """Search each context with `method` (dts or dts-star) and append its tree to the buffer at `path`,
    as `sdt search --save-buffer` does. Returns per-context stats and mean reward. A neural prior
    is loaded afresh per context, so that `cfg.budget` counts each context's own work."""
    from tqdm.auto import tqdm

    from specdifftree.amortize.buffer import save_search
    from specdifftree.search.api import build_problem, run_search

    rows = []
    for context in tqdm(contexts, desc="buffer", disable=None if progress else True, leave=False):
        problem, _ = build_problem(prior, rewards, context)
        result = run_search(problem, method, cfg)
        record = save_search(path, problem, result, prior=prior, rewards=rewards, lam=cfg.lam, cfg=cfg)
        rows.append({**result.stats(), "trajectories": len(record),
                     "mean_reward": sum(s.reward for s in result.samples) / max(len(result.samples), 1)})
    return rows


def train_flow(buffers: list[str | Path], prior: str, rewards: list[str], out_dir: str | Path,
               lam: Optional[float] = None, cfg=None, progress: bool = False, wandb: bool = False) -> dict:
    """Train a flow network on the search buffers (what `sdt amortize` does) into `out_dir`.

    `lam` None: the built-in problem's lambda, else 1.0 (as in `sdt search`). Every buffer must come
    from this prior (fingerprint), vocabulary, reward and lambda. Records of the same context are
    pooled; contexts are split into training and held-out validation (`cfg.val_fraction`).
    Returns the run summary (also in `out_dir/config.json` under "training" and in tracking.jsonl).
    """
    from dataclasses import asdict

    from specdifftree.amortize.buffer import header_for, read_buffer
    from specdifftree.amortize.train import AmortizeConfig, fit
    from specdifftree.tracking import Tracker

    cfg = (cfg or AmortizeConfig()).validate()
    if not buffers:
        raise SDTError("give at least one --buffer FILE (written by `sdt search ... --save-buffer FILE`)")
    read = [(b, *read_buffer(b)) for b in buffers]
    groups: dict[str, list] = {}
    for _, _, records in read:
        for r in records:
            groups.setdefault(json.dumps(r.context, sort_keys=True), []).append(r)
    records = list(groups.values())
    problems, builtin_lam = open_problems(prior, rewards, [rs[0].query() for rs in records])
    lam = lam if lam is not None else (builtin_lam if builtin_lam is not None else 1.0)
    want = header_for(problems[0], prior, rewards, lam)
    for path, header, _ in read:
        why = want.mismatch(header)
        if why:
            raise SDTError(f"buffer {path} does not fit this run: different {why} (the buffer vs this run)")
    run_config = {"buffers": [str(b) for b in buffers], "prior": prior, "reward": list(rewards), "lam": lam,
                  **asdict(cfg)}
    meta = {"prior": prior, "fingerprint": want.fingerprint, "reward": list(rewards)}
    with Tracker(out_dir, name=f"amortize-{Path(out_dir).name}", job_type="amortize", config=run_config,
                 enabled=wandb) as tracker:
        summary = fit(problems, records, lam, cfg, out_dir, meta, progress=progress, tracker=tracker)
        tracker.summary(summary)
    return summary

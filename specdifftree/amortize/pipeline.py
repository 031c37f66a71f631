"""The S-ADT loop as Python calls (what `sdt search --save-buffer` and `sdt amortize` do, for runners).

    from specdifftree.amortize.pipeline import collect_buffer, train_flow
    from specdifftree.problem import Queries
    from specdifftree.search.common import SearchConfig
    from specdifftree.search.registry import run_search

    collect_buffer("runs/buf.safetensors", "default", ["spectral"], train_contexts,   # list of Context
                   SearchConfig(iterations=200, lam=1.0))
    summary = train_flow(["runs/buf.safetensors"], "default", ["spectral"], "runs/flow", lam=1.0)
    problem = Queries.open("default", ["spectral"]).problem(eval_context)
    result = run_search(problem, "sadt", SearchConfig(flow="runs/flow", lam=1.0, iterations=50))

Contexts for training should come from the flow-train part of `data/splits.py` (ETT: 60-75% by time),
evaluation contexts from the eval part.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from specdifftree.errors import SDTError
from specdifftree.data.context import Context
from specdifftree.prior.sources import PriorSource
from specdifftree.problem import Queries
from specdifftree.search.common import SearchConfig

BUFFER_QUERIES = 16  # contexts searched in lockstep at once (each batch's trees appended when it ends)


def collect_buffer(path: str | Path, prior: str | PriorSource, rewards: list[str], contexts: list[Context],
                   cfg: SearchConfig, method: str = "dts", progress: bool = False, resume: bool = False,
                   log=None) -> list[dict]:
    """Search each context with `method` (dts or dts-star) and append its tree to the buffer at `path`,
    as `sdt search --save-buffer` does; BUFFER_QUERIES contexts at a time are searched in lockstep
    (search/many.py), each tree the one its context gets alone. Returns per-context stats and mean
    reward. `prior`: a spec or an opened prior; it is loaded once, and each context's problem has its own cost meter, so
    `cfg.budget` counts its own work. `resume`: a context whose tree the buffer already holds, searched
    with this method and config (a run killed part-way: trees are appended a lockstep chunk at a time,
    so a kill loses at most the chunk being searched), is not searched again; each search is seeded
    by `cfg` alone, so the buffer ends as an uninterrupted run's would. `log`: also a line per context
    (where no progress bar shows, as in a Ray task's log)."""
    from specdifftree.amortize.buffer import context_record, read_buffer, search_record
    from specdifftree.progress import progress as progress_bar

    queries = Queries.open(prior, rewards)
    done, searched_with = {}, search_record(cfg)
    if resume and Path(path).is_file():
        done = {_key(r.context): r for r in read_buffer(path)[1]
                if r.meta.get("method") == method and r.meta.get("search") == searched_with}
    records = [done.get(_key(context_record(c))) for c in contexts]
    todo = [i for i, r in enumerate(records) if r is None]
    with progress_bar(len(contexts), "buffer", "contexts", initial=len(contexts) - len(todo), enabled=progress) as bar:
        for lo in range(0, len(todo), BUFFER_QUERIES):  # searched in lockstep, appended in order
            chunk = todo[lo:lo + BUFFER_QUERIES]
            for i, record in zip(chunk, _search_into(path, queries, [contexts[i] for i in chunk], method, cfg,
                                                     rewards, bar.update)):
                records[i] = record
    rows = []
    for i, record in enumerate(records):
        rows.append({**{k: v for k, v in record.meta.items() if k != "search"}, "trajectories": len(record)})
        if log is not None:
            m = record.meta
            log(f"buffer {i + 1}/{len(contexts)}: {m['forward_tokens']:,} forward tokens, mean reward "
                f"{m['mean_reward']:.4f}, " + (f"{m['wall_s']:.0f} s" if i in todo else "from the buffer"))
    return rows


def _key(context: dict) -> str:
    return json.dumps(context, sort_keys=True)


def _search_into(path, queries: Queries, contexts: list[Context], method: str, cfg: SearchConfig,
                 rewards: list[str], on_done=None) -> list:
    """The contexts' searches, in lockstep (search/many.py: each tree is the one its context gets
    alone), each tree appended to the buffer at `path` in order; returns the Records."""
    from specdifftree.amortize.buffer import save_search
    from specdifftree.search.many import run_many

    problems = [queries.problem(context) for context in contexts]
    try:
        results = run_many(problems, method, cfg, progress=None if on_done is None else lambda k: on_done(k))
        return [save_search(path, p, r, prior=queries.source.spec.text, rewards=rewards, lam=cfg.lam, cfg=cfg)
                for p, r in zip(problems, results)]
    finally:
        for problem in problems:
            problem.prior.close()  # the shared backbone gets the trees' KV memory back


def train_flow(buffers: list[str | Path], prior: str | PriorSource, rewards: list[str], out_dir: str | Path,
               lam: Optional[float] = None, cfg=None, progress: bool = False, wandb: bool = False,
               placement=None, resume: bool = False) -> dict:
    """Train a flow network on the search buffers (what `sdt amortize` does) into `out_dir`.

    `lam` None: the built-in problem's lambda, else 1.0 (as in `sdt search`). Every buffer must come
    from this prior (weights sha256), vocabulary, reward and lambda. Records of the same context are
    pooled; contexts are split into training and held-out validation (`cfg.val_fraction`).
    `resume`: continue from OUT/state.safetensors (after a kill), to the same checkpoint bytes.
    Under torchrun each rank computes the loss of its share of every batch (DDP); rank 0 writes.
    Returns the run summary (also in `out_dir/config.json` under "training" and in tracking.jsonl;
    {} on the ranks other than 0).
    """
    from specdifftree.amortize.train import AmortizeConfig

    cfg = (cfg or AmortizeConfig()).validate()
    check_flow_inputs(buffers, prior, rewards, out_dir)  # before torch is imported
    from specdifftree.train.distributed import process_group

    with process_group(placement) as dist:
        return _train_flow(buffers, prior, rewards, Path(out_dir), lam, cfg, progress, wandb,
                           dist.placement(placement), resume, dist)


def check_flow_inputs(buffers: list[str | Path], prior: str | PriorSource, rewards: list[str], out_dir: str | Path,
                      backbone: Optional[str] = None) -> None:
    """What `train_flow` reads and writes, checked before anything loads: the buffer files, the prior
    spec and its files, the reward, and the output directory (SDTError)."""
    from specdifftree import validate

    if not buffers:
        raise SDTError("give at least one --buffer FILE (written by `sdt search ... --save-buffer FILE`)")
    for path in buffers:
        validate.input_file(path, "search buffer", f" (write one with `sdt search ... --save-buffer {path}`)")
    if isinstance(prior, str):
        validate.reward_specs(validate.prior_spec(prior, backbone), rewards)
    validate.output_path(out_dir, "--out", directory=True)


def _train_flow(buffers, prior, rewards, out_dir: Path, lam, cfg, progress, wandb, placement, resume, dist) -> dict:
    from dataclasses import asdict

    from specdifftree.amortize.buffer import header_for, read_buffer
    from specdifftree.amortize.train import fit_flow
    from specdifftree.files import file_sha256
    from specdifftree.tracking import Tracker

    read = [(b, *read_buffer(b)) for b in buffers]
    groups: dict[str, list] = {}
    for _, _, records in read:
        for r in records:
            groups.setdefault(_key(r.context), []).append(r)
    records = list(groups.values())
    queries = Queries.open(prior, rewards, lam, placement=placement)
    lam, prior = queries.lam, queries.source.spec.text
    problems = [queries.problem(rs[0].query()) for rs in records]
    want = header_for(problems[0], prior, rewards, lam)
    for path, header, _ in read:
        why = want.mismatch(header)
        if why:
            raise SDTError(f"buffer {path} does not fit this run: different {why} (the buffer vs this run)")
    run_config = {"buffers": [str(b) for b in buffers], "prior": prior, "reward": list(rewards), "lam": lam,
                  **asdict(cfg)}
    meta = {"prior": prior, "prior_weights_sha256": want.prior_weights_sha256, "reward": list(rewards)}
    inputs = {"buffers_sha256": [file_sha256(b) for b in buffers]}  # --resume: the same buffers
    if not dist.is_main:  # rank 0 alone writes files and W&B, and reports
        fit_flow(problems, records, lam, cfg, out_dir, meta, resume=resume, dist=dist, inputs=inputs)
        return {}
    with Tracker(out_dir, name=f"amortize-{out_dir.name}", job_type="amortize", config=run_config,
                 enabled=wandb) as tracker:
        summary = fit_flow(problems, records, lam, cfg, out_dir, meta, progress=progress, tracker=tracker,
                           resume=resume, dist=dist, inputs=inputs)
        tracker.summary(summary)
    return summary

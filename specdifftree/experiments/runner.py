"""`sdt experiment run`: every cell (dataset x method x budget x seed) of an experiment, resumable.

Layout of the output directory DIR:

    DIR/experiment.json                   the resolved experiment (preset merged in)
    DIR/results.csv                       one row per finished cell: its means over windows, and what
                                          it was made with (experiments/provenance.py)
    DIR/forecasts.csv                     every cell's forecasts in statsforecast's long format (median
                                          and 80/95% bands per step, `y` the truth; long_format.py)
    DIR/cells/<cell>/record.json          per-window metrics, histories, targets, samples' values, provenance
    DIR/cells/<cell>/tracking.jsonl       the local tracking record (specdifftree.tracking)
    DIR/cells/<cell>/wandb/               the offline W&B run (unless --no-wandb)
    DIR/cells/<cell>/*.png, tree.graphml  the cell's plots, and its first window's tree (when small)

Here (without `ray`) a cell's windows, and the cells of one dataset, method and budget across seeds
(up to MAX_QUERIES windows), are searched in lockstep (search/many.py): every round's rows of all of
them go through one backbone forward, and each window's result is what it gets alone with its seed
(the same samples and forward tokens; its `wall_s` spans the whole group's search).

A cell is finished when its record.json exists; it is written atomically and last, so a killed
run resumes where it stopped and a rerun skips what is done. results.csv is rebuilt from the
records after every cell.

With `ray` ("local", "auto" or "ray://HOST:PORT"; experiments/on_ray.py) every unfinished cell is
a Ray task that writes its own cell directory as above, with the file's `resources` and
`max_retries`; each task opens the prior for its cell's windows. The flow network is
trained by one task first. Same files and rows as a serial run; only wall times differ.

Budgets. A cell's cap is budget * (the dataset's budget_scale) * (the method's budget_scale)
forward tokens, prompt prefill included, passed as SearchConfig.budget. Methods whose own
parameters set their cost get them sized to the cap from the first window's problem, with P
its prompt tokens and T the typical answer length (characters of the history's last H values
written with the codec, plus EOS; at most the prior's max_len), room = cap - P:

    best-of-n   n = max(1, room // T)            first batch fills the cap; more batches while it lasts
    beam        beam_width = max(1, room // T)   each beam costs about T tokens
    smc         particles = clamp(room // T, 1, search.particles); further sweeps while the cap lasts
    dts, dts-star, mcts
                iterations unbounded (the cap stops them); batch_size = clamp(room // (4 T), 1,
                search.batch_size), so a round's rollouts are at most about a quarter of the cap
    sadt        iterations unbounded. With rollout "q" (default) every leaf is terminal, so the
                final re-descents cost nothing: batch_size as for dts, and the tree grows until
                cap - batch_size * T, so that its last round cannot pass the cap. With rollout
                "flow" the `samples` final re-descents are completed with q after the search and
                those tokens count too: the tree grows until cap - samples * T (at least P + 1);
                a round costs one token per new node, so batch_size stays
    sample, sadt-sample
                search.samples draws, fewer if the cap runs out first
    greedy      one sequence; its cost is what it is
    naive, seasonal-naive, stats:auto-ets, stats:auto-theta (reference forecasters)
                search.samples sample paths from the history alone: 0 forward tokens, the cap unused

Every method gets the dataset's season (SearchConfig.season), which the reference forecasters use.

A method's own options in the experiment file win over these rules.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np

from specdifftree.errors import SDTError
from specdifftree.files import jsonable, write_json, write_text
from specdifftree.experiments.config import DatasetSpec, ExperimentConfig, MethodSpec
from specdifftree.experiments.datasets import Window, data_root, windows
from specdifftree.experiments.metrics import WINDOW_METRICS, mean_over
from specdifftree.experiments.provenance import PROVENANCE_KEYS
from specdifftree.experiments.sizing import UNBOUNDED, answer_tokens, sized_config, window_seed  # noqa: F401

TREE_ARTIFACT_MAX_NODES = 5000
MAX_QUERIES = 16  # windows searched in lockstep at once when a group holds several cells (seeds)
CELL_KEYS = ("experiment", "dataset", "horizon", "method", "budget", "cap", "seed", "windows")
RESULT_COLUMNS = CELL_KEYS + WINDOW_METRICS + PROVENANCE_KEYS


@dataclass
class Cell:
    dataset: DatasetSpec
    method: MethodSpec
    budget: int
    seed: int

    @property
    def cap(self) -> int:
        return max(1, round(self.budget * self.dataset.budget_scale * self.method.budget_scale))

    @property
    def key(self) -> str:
        return f"{self.dataset.name}__{self.method.name}__b{self.budget}__s{self.seed}"


@dataclass
class RunSummary:
    out_dir: Path
    ran: list[str]
    skipped: list[str]  # finished earlier
    unavailable: dict[str, str]  # method -> why it did not run
    rows: list[dict]


def cells(cfg: ExperimentConfig, methods: list[MethodSpec]) -> list[Cell]:
    return [Cell(d, m, b, s) for d in cfg.datasets for m in methods for b in cfg.budgets for s in cfg.seeds]


def run_experiment(cfg: ExperimentConfig, out_dir: str | Path, wandb: bool = True, progress: bool = True,
                   log=print, ray: Optional[str] = None) -> RunSummary:
    """Run every cell that has no record yet (torch on `cfg.threads` threads); returns what ran,
    what was skipped, and results.csv's rows. `ray`: None runs the cells here, one after another;
    "local" (a Ray instance started here), "auto" (a running cluster) or "ray://HOST:PORT" (Ray
    Client) runs each cell as a Ray task (experiments/on_ray.py): the same files and rows."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, Path(out_dir), wandb, progress, log, ray)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: ExperimentConfig, out: Path, wandb: bool, progress: bool, log, ray: Optional[str]) -> RunSummary:
    from specdifftree.search.registry import METHODS

    (out / "cells").mkdir(parents=True, exist_ok=True)
    write_json(out / "experiment.json", cfg.to_dict())
    unavailable = {m.name: f"'{m.method}' is not a search method in this checkout" for m in cfg.methods
                   if m.method not in METHODS}
    methods = [m for m in cfg.methods if m.name not in unavailable]
    root = data_root(cfg.data_root)
    wins = {d.name: windows(d, root) for d in cfg.datasets}
    from specdifftree.progress import progress as progress_bar

    with contextlib.ExitStack() as stack:
        cluster = None
        if ray is not None:
            from specdifftree.experiments.on_ray import RaySession

            cluster = stack.enter_context(RaySession(ray, cfg.resources, cfg.max_retries))
        if any(METHODS[m.method].uses_flow for m in methods):  # once, before the cells that need it
            flow, why = cluster.call(_resolve_flow, cfg, out, wandb) if cluster else _resolve_flow(cfg, out, wandb, log)
            if flow is None:
                unavailable.update({m.name: why for m in methods if METHODS[m.method].uses_flow})
                methods = [m for m in methods if not METHODS[m.method].uses_flow]
            else:
                methods = [_with_flow(m, flow) for m in methods]
        for name, why in unavailable.items():
            log(f"skipping method {name}: {why}")
        todo, skipped = [], []
        for cell in cells(cfg, methods):
            record = out / "cells" / cell.key / "record.json"
            if record.is_file():
                check_same(cfg, cell, json.loads(record.read_text()), record.parent)
                skipped.append(cell)
            else:
                todo.append(cell)
        total = sum(len(wins[c.dataset.name]) for c in todo + skipped)
        done = sum(len(wins[c.dataset.name]) for c in skipped)
        with progress_bar(total, "windows", "win", initial=done, enabled=progress, leave=True) as bar:
            if cluster is not None:
                ran = _run_on_ray(cluster, cfg, todo, wins, out, wandb, bar)
            else:
                ran = _run_here(cfg, todo, wins, out, wandb, bar)
    rows = write_results(out)
    return RunSummary(out, ran, [c.key for c in skipped], unavailable, rows)


def _resolve_flow(cfg: ExperimentConfig, out: Path, wandb: bool, log=print):
    from specdifftree.experiments.amortization import resolve_flow

    return resolve_flow(cfg, out, wandb=wandb, log=log)


def _run_on_ray(cluster, cfg: ExperimentConfig, todo: list[Cell], wins: dict, out: Path, wandb: bool, bar) -> list[str]:
    """Every cell as a Ray task (`cluster`: an on_ray.RaySession); results.csv as each one ends.
    Cells that fail after their retries are named in one SDTError once the others are done."""
    def done(i: int) -> None:
        bar.update(len(wins[todo[i].dataset.name]))
        bar.set_postfix_str(todo[i].key)
        finished.add(i)
        write_results(out)

    finished: set[int] = set()
    calls = [(cfg, cell, wins[cell.dataset.name], out / "cells" / cell.key, wandb) for cell in todo]
    failed = cluster.map(_cell_task, calls, done)
    if failed:
        i, error = failed[0]
        raise SDTError(f"{len(failed)} cell(s) failed after {cfg.max_retries} retries, first {todo[i].key}: "
                       f"{str(error).splitlines()[0] if str(error) else type(error).__name__}; finished cells "
                       "are kept, a rerun retries the others")
    return [c.key for i, c in enumerate(todo) if i in finished]


def _cell_task(cfg: ExperimentConfig, cell: Cell, wins: list[Window], cell_dir: Path, wandb: bool) -> str:
    """One cell in a Ray worker: torch on cfg.threads threads; the prior is opened for this cell's
    windows and released with it (a worker keeps nothing between tasks)."""
    import torch

    torch.set_num_threads(cfg.threads)
    run_cell(cfg, cell, wins, cell_dir, wandb=wandb)
    return cell.key


def _run_here(cfg: ExperimentConfig, todo: list[Cell], wins: dict, out: Path, wandb: bool, bar) -> list[str]:
    """The cells in this process, sharing one opened prior: the cells of one dataset, method and budget
    (its seeds) together, their windows in lockstep (`run_cells`, at most MAX_QUERIES windows at once
    unless one cell has more); results.csv after each group."""
    queries, ran = None, []  # the prior, reward and lambda: loaded once, for every cell and window
    for group in seed_groups(todo, {name: len(w) for name, w in wins.items()}):
        bar.set_postfix_str(group[0].key)
        queries = queries or open_queries(cfg)
        run_cells(cfg, group, wins[group[0].dataset.name], [out / "cells" / c.key for c in group], queries,
                  wandb=wandb, on_window=lambda: bar.update(1))
        ran += [c.key for c in group]
        write_results(out)
    return ran


def seed_groups(todo: list[Cell], n_windows: dict[str, int]) -> list[list[Cell]]:
    """The cells in order, consecutive cells of one dataset, method and budget grouped, each group's
    windows (all its cells') at most MAX_QUERIES (a cell with more windows is a group of its own)."""
    groups: list[list[Cell]] = []
    for cell in todo:
        last = groups[-1] if groups else None
        same = last is not None and (last[0].dataset.name, last[0].method.name, last[0].budget) == \
            (cell.dataset.name, cell.method.name, cell.budget)
        if same and (len(last) + 1) * n_windows[cell.dataset.name] <= MAX_QUERIES:
            last.append(cell)
        else:
            groups.append([cell])
    return groups


def open_queries(cfg: ExperimentConfig):
    """The experiment's prior (its backbone loaded once), reward and lambda (`search.lam`, default 1)."""
    from specdifftree.problem import Queries
    from specdifftree.progress import quiet_model_loading

    with quiet_model_loading():
        return Queries.open(cfg.prior, cfg.reward, cfg.search.get("lam"), backbone=cfg.backbone,
                            placement=experiment_placement(cfg))


def run_cell(cfg: ExperimentConfig, cell: Cell, wins: list[Window], cell_dir: Path, queries=None,
             wandb: bool = True, on_window=None) -> dict:
    """Run one cell over its windows, track it, write its record (last). Returns the record.
    Whatever an unfinished earlier attempt left in `cell_dir` is removed first. `queries`: the
    experiment's opened prior and reward (`open_queries`), shared by every window and cell; each
    window's problem has its own cost meter. The windows are searched together (`run_cells`)."""
    return run_cells(cfg, [cell], wins, [cell_dir], queries, wandb, on_window)[0]


def run_cells(cfg: ExperimentConfig, group: list[Cell], wins: list[Window], cell_dirs: list[Path], queries=None,
              wandb: bool = True, on_window=None) -> list[dict]:
    """Cells of one dataset and method (one per seed, say), run as `run_cell` runs one, but every window
    of every cell searched in lockstep (search/many.py: each round's rows of all of them in one backbone
    forward; each window's result is the one it gets alone with its seed). on_window() as each window's
    search ends. Returns the records."""
    from specdifftree.search.many import run_many

    if not wins:
        raise SDTError(f"dataset '{group[0].dataset.name}' has no evaluation windows")
    queries = queries or open_queries(cfg)
    contexts = [w.context(group[0].dataset) for w in wins]
    plans = [_plan_cell(cfg, cell, contexts, cell_dir, queries, wandb) for cell, cell_dir in zip(group, cell_dirs)]
    try:
        results = run_many([p for plan in plans for p in plan["problems"]], group[0].method.method,
                           [replace(plan["search"], seed=window_seed(plan["cell"].seed, i))
                            for plan in plans for i in range(len(wins))],
                           progress=None if on_window is None else lambda _: on_window())
        records = [_finish_cell(cfg, plan, wins, contexts, results[k * len(wins):(k + 1) * len(wins)])
                   for k, plan in enumerate(plans)]
    except BaseException:
        for plan in plans:
            plan["tracker"].finish("failed")
        raise
    finally:
        for plan in plans:
            for problem in plan["problems"]:
                problem.prior.close()  # the shared backbone gets the windows' KV memory back
    for plan in plans:
        plan["tracker"].finish()
    return records


def _plan_cell(cfg: ExperimentConfig, cell: Cell, contexts: list, cell_dir: Path, queries, wandb: bool) -> dict:
    """A cell about to run: its directory emptied, a problem per window, its sized config, its tracker."""
    from specdifftree.tracking import Tracker

    shutil.rmtree(cell_dir, ignore_errors=True)  # what a killed attempt left (no record: unfinished)
    cell_dir.mkdir(parents=True)
    problems = [queries.problem(context) for context in contexts]
    search_cfg = sized_config(cfg, cell, problems[0].prior, contexts[0])
    tracker = Tracker(cell_dir, project=cfg.wandb_project, name=cell.key, group=cfg.label,
                      tags=[cell.method.method, cell.dataset.name], job_type="experiment", enabled=wandb,
                      config=cell_config(cfg, cell, search_cfg))
    return {"cell": cell, "dir": cell_dir, "problems": problems, "search": search_cfg, "tracker": tracker}


def _finish_cell(cfg: ExperimentConfig, plan: dict, wins: list[Window], contexts: list, results: list) -> dict:
    """Score and track a cell's windows, write its plots and (last) its record; returns the record."""
    from specdifftree.experiments.plots import plot_cell
    from specdifftree.experiments.provenance import provenance
    from specdifftree.experiments.text_windows import is_text_dataset, metric_keys, score_window, window_samples

    cell, cell_dir, tracker, ds = plan["cell"], plan["dir"], plan["tracker"], plan["cell"].dataset
    per_window: list[dict] = []
    for i, (w, context, result) in enumerate(zip(wins, contexts, results)):
        samples, metrics = score_window(result, context, w, ds)  # a forecast's, or a caption's / answer's
        tracker.log(metrics, step=i)
        per_window.append({"window": w.key, "metrics": metrics, "history": w.history.tolist(),
                           "target": None if w.target is None else w.target.tolist(),
                           "samples": window_samples(samples)})
        if i == 0 and result.tree is not None and result.tree.size <= TREE_ARTIFACT_MAX_NODES:
            from specdifftree.search.tree import save_graphml

            save_graphml(result.tree, str(cell_dir / "tree.graphml"))
            tracker.artifact(f"tree-{cell.key}", cell_dir / "tree.graphml", kind="tree")
    means = mean_over([pw["metrics"] for pw in per_window], metric_keys(ds, WINDOW_METRICS))
    record = {"cell": cell_row(cfg, cell, len(per_window)), "metrics": means,
              "config": cell_config(cfg, cell, plan["search"]), "prior": plan["problems"][-1].prior.describe(),
              "provenance": provenance(cfg.prior), "windows": per_window,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for name, path in ({} if is_text_dataset(ds) else plot_cell(record, cell_dir)).items():
        tracker.image(name, path)
    tracker.table("windows", ["window", *WINDOW_METRICS],
                  [[pw["window"], *(pw["metrics"].get(k, math.nan) for k in WINDOW_METRICS)] for pw in per_window])
    tracker.summary({**record["cell"], **means, **record["provenance"]})
    write_json(cell_dir / "record.json", record)
    return record


def experiment_placement(cfg: ExperimentConfig):
    """The Placement (device, dtype, n_gpu_layers) the experiment's prior opens with."""
    from specdifftree.prior.backbones.base import Placement

    return Placement(cfg.device, cfg.dtype, cfg.n_gpu_layers)


def cell_row(cfg: ExperimentConfig, cell: Cell, n_windows: int) -> dict:
    return {"experiment": cfg.label, "dataset": cell.dataset.name, "horizon": cell.dataset.horizon,
            "method": cell.method.name, "budget": cell.budget, "cap": cell.cap, "seed": cell.seed,
            "windows": n_windows}


def cell_config(cfg: ExperimentConfig, cell: Cell, search_cfg) -> dict:
    """What W&B shows as the run config: the dataclasses, as dicts."""
    return {"experiment": {k: v for k, v in cfg.to_dict().items() if k not in ("datasets", "methods")},
            "dataset": asdict(cell.dataset), "method": asdict(cell.method),
            "search": None if search_cfg is None else search_cfg.to_dict(),
            "budget": cell.budget, "cap": cell.cap, "seed": cell.seed}


SAME = ("prior", "backbone", "reward", "search", "flow")  # experiment fields a finished cell must share to be reused


def check_same(cfg: ExperimentConfig, cell: Cell, record: dict, cell_dir: Path) -> None:
    """SDTError when a finished cell was run with another prior, reward, search options, flow,
    dataset or method spec than this experiment asks for (a rerun must not mix the two)."""
    now = json.loads(json.dumps(jsonable(cell_config(cfg, cell, None))))
    was = record.get("config", {})
    pairs = [(k, now["experiment"].get(k), was.get("experiment", {}).get(k)) for k in SAME]
    pairs += [(k, now[k], was.get(k)) for k in ("dataset", "method")]
    for key, want, have in pairs:
        if want != have:
            raise SDTError(f"{cell_dir} was run with {key} {have!r}, this experiment has {want!r}: "
                           "use another --out, or delete that cell to rerun it")


def read_records(out_dir: str | Path) -> list[dict]:
    """Every finished cell's record under DIR/cells, in a stable order."""
    paths = sorted(Path(out_dir).glob("cells/*/record.json"))
    return [json.loads(p.read_text()) for p in paths]


def result_row(record: dict) -> dict:
    """A cell record as a results row: cell keys, metric means, provenance (absent in old records)."""
    return {**record["cell"], **record["metrics"], **record.get("provenance", {})}


def write_results(out_dir: str | Path) -> list[dict]:
    """Rebuild DIR/results.csv, and the cells' forecasts as DIR/forecasts.csv (long format,
    experiments/long_format.py), from the cell records (atomically). Returns results.csv's rows."""
    from specdifftree.experiments.long_format import write_experiment_forecasts
    from specdifftree.experiments.text_windows import result_columns  # + the text metrics a text table has

    records = read_records(out_dir)
    write_experiment_forecasts(out_dir, records)
    rows = [result_row(r) for r in records]
    rows.sort(key=lambda r: (r["dataset"], r["method"], r["budget"], r["seed"]))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=result_columns(RESULT_COLUMNS, rows), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(Path(out_dir) / "results.csv", buf.getvalue())
    return rows


def _with_flow(method: MethodSpec, flow: Path) -> MethodSpec:
    from specdifftree.search.registry import METHODS

    if not METHODS[method.method].uses_flow or "flow" in method.params:
        return method
    return replace(method, params={**method.params, "flow": str(flow)})


def default_out(cfg: ExperimentConfig) -> Path:
    return Path("runs") / cfg.label


def summary_table(rows: list[dict]) -> str:
    from specdifftree.report import table

    cols = ["dataset", "method", "budget", "seed", "windows", "reward", "spec_w1", "crps", "mase",
            "diversity", "forward_tokens", "wall_s"]
    return table(rows, cols)


__all__ = ["Cell", "RunSummary", "run_experiment", "run_cell", "read_records", "write_results", "sized_config",
           "default_out", "summary_table"]

"""The experiment's amortization step: the flow network that `sadt` and `sadt-sample` need, given or
trained first (the `flow:` section is parsed by experiments/config.py, `flow_training`).

    flow: runs/flow                       a flow network directory written by `sdt amortize`
    flow:                                 train one into DIR/flow first (FlowTraining):
      contexts: 16                        per dataset, evenly spaced over its flow-train part
      search: {iterations: 128}           the DTS runs that fill the buffer (SearchConfig fields)
      amortize: {steps: 500}              AmortizeConfig fields (`sdt amortize`)

Training contexts come from the flow-train part of `data/splits.py` (ETT: the 60-75% stretch by
time; M4: the first training series), never from validation or evaluation windows. The buffer
searches and the flow use the experiment's prior, reward and lambda (`search.lam`), so the flow fits
the sadt cells. Training is done once: DIR/flow/experiment_flow.json marks a finished flow, and a
rerun reuses it when DIR/flow-plan.json says it was made for this run's plan (else it is trained
anew). A run killed before that loses nothing: the rerun keeps the buffer's finished searches
(DIR/flow-buffer.safetensors, one tree per context, appended atomically) and the training's last
commit (DIR/flow/state.safetensors), and ends with the same flow as an uninterrupted run. The
plan they were made for (DIR/flow-plan.json) must be this run's; another plan's are deleted.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from specdifftree.errors import SDTError
from specdifftree.experiments.config import ExperimentConfig, FlowTraining, flow_training

DONE = "experiment_flow.json"


def resolve_flow(cfg: ExperimentConfig, out_dir: Path, wandb: bool = False, log=print) -> tuple[Optional[Path], str]:
    """(flow network directory, "") or (None, why the flow methods cannot run)."""
    if cfg.flow is None:
        return None, "needs a flow network: set `flow: DIR` (from `sdt amortize`) or a `flow:` training section"
    if isinstance(cfg.flow, str):
        path = Path(cfg.flow).expanduser()
        if not path.is_dir():
            raise SDTError(f"flow network directory not found: {path} (train one with `sdt amortize`)")
        return path, ""
    return train_experiment_flow(cfg, flow_training(cfg.flow), out_dir / "flow", wandb=wandb, log=log), ""


def train_experiment_flow(cfg: ExperimentConfig, ft: FlowTraining, flow_dir: Path, wandb: bool = False, log=print) -> Path:
    """Fill a buffer with DTS trees on flow-part contexts, train the flow network on it (`sdt
    amortize`), mark it finished. Returns `flow_dir`; a finished one made for this plan is reused."""
    from specdifftree.amortize.pipeline import collect_buffer, train_flow
    from specdifftree.amortize.train import AmortizeConfig
    from specdifftree.experiments.datasets import data_root, windows
    from specdifftree.files import write_json
    from specdifftree.prior.sources import open_prior
    from specdifftree.search.common import SearchConfig

    names = ft.datasets or [d.name for d in cfg.datasets]
    specs = {d.name: d for d in cfg.datasets}
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise SDTError(f"flow: datasets: '{unknown[0]}' is not a dataset of this experiment")
    root = data_root(cfg.data_root)
    contexts = [w.context(specs[n]) for n in names for w in windows(specs[n], root, part="flow-train", count=ft.contexts)]
    lam = float(cfg.search.get("lam", 1.0))
    buffer = flow_dir.parent / "flow-buffer.safetensors"
    if not _start_plan(flow_dir, buffer, _plan(cfg, ft, lam, contexts), log):
        log(f"flow network: reusing {flow_dir}")
        return flow_dir
    log(f"flow network: searching {len(contexts)} flow-train contexts ({ft.method}) for the buffer ...")
    search_cfg = SearchConfig(**{**ft.search, "lam": lam}).validate()
    prior = cfg.prior if cfg.backbone is None else open_prior(cfg.prior, cfg.backbone)  # opened once for both
    rows = collect_buffer(buffer, prior, cfg.reward, contexts, search_cfg, method=ft.method, progress=True,
                          resume=True, log=lambda line: log(f"flow network: {line}"))
    log(f"flow network: training on {buffer} into {flow_dir} ...")
    summary = train_flow([buffer], prior, cfg.reward, flow_dir, lam=lam, cfg=AmortizeConfig(**ft.amortize),
                         progress=True, wandb=wandb, resume=True)
    write_json(flow_dir / DONE, {"training": dataclasses.asdict(ft), "lam": lam, "contexts": len(contexts),
                                 "buffer": str(buffer), "buffer_searches": rows, "summary": summary})
    return flow_dir


def _start_plan(flow_dir: Path, buffer: Path, plan: dict, log=print) -> bool:
    """False when DIR/flow holds a finished flow network made for `plan` (or finished before plans
    were recorded): reuse it. Otherwise True, keeping a killed run's buffer and training state when
    they were made for `plan`, else deleting them and any finished flow of another plan (they would
    be appended to, resumed or reused), and recording `plan` as the one the files now follow."""
    import json

    from specdifftree.files import jsonable, write_json
    from specdifftree.train.state import STATE

    marker, plan = flow_dir.parent / "flow-plan.json", jsonable(plan)
    same = marker.is_file() and json.loads(marker.read_text()) == plan
    if (flow_dir / DONE).is_file() and (same or not marker.is_file()):
        return False
    if same:
        if buffer.is_file():
            log(f"flow network: resuming a killed run's buffer {buffer} and training state")
        return True
    if (flow_dir / DONE).is_file():
        log(f"flow network: {flow_dir} was made for another plan (prior, reward, options or contexts); training anew")
    for stale in (buffer, flow_dir / STATE, flow_dir / DONE):
        stale.unlink(missing_ok=True)
    write_json(marker, plan)
    return True


def _plan(cfg: ExperimentConfig, ft: FlowTraining, lam: float, contexts: list) -> dict:
    """What the buffer and the training state are made from: options, prior (its weights' sha256 where
    known, so a prior retrained in place is another plan, and the same prior named by another path is
    not; else its spec), reward, lambda and the contexts."""
    import hashlib
    import json

    from specdifftree.amortize.buffer import context_record
    from specdifftree.experiments.provenance import provenance

    weights = {k: v for k, v in provenance(cfg.prior).items() if k.endswith("_sha256")}
    contexts_sha256 = hashlib.sha256(json.dumps([context_record(c) for c in contexts], sort_keys=True).encode())
    prior = None if weights.get("prior_sha256") else str(cfg.prior)
    return {"training": dataclasses.asdict(ft), "lam": lam, "prior": prior, "backbone": cfg.backbone,
            "weights": weights, "reward": list(cfg.reward), "contexts_sha256": contexts_sha256.hexdigest()}

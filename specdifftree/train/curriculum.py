"""Curriculum training of the prior, the LLM frozen (DESIGN.md 7): the stages in order, each from
the previous stage's best checkpoint, in one run directory.

    summary = train_prior(["stage1_mcq", ...], TrainConfig.from_name("smoke"), "default", Path("runs/prior"))

Per stage: the train / val / test examples (`build_examples`: `data.stages.build_stage`, or the
official OpenTSLM data with `upstream`), then `stage.train_stage`. The run directory holds a
manifest (train_prior.json: backbone, seed, preset, variant, data; the final checkpoint), which a
rerun must match; `--resume` continues from the last committed epoch.

Variants (`cfg.variant`, `sdt train-prior --variant`): "bias" trains the encoder and a logit-bias
head over the frozen LLM's cached logits (train/bias.py); "sp" trains an encoder + soft-prompt
projector through the frozen LLM in OpenTSLM-SP's layout, LoRA optional from stage 3
(train/soft_prompt.py). Both go through the same stage loop (train/stage.py).

Under torchrun (`torchrun --nproc-per-node N sdt train-prior ...`, train/distributed.py) rank r
owns the train and val examples i with i % N == r and caches the backbone logits of those alone;
rank 0 alone writes. A kill of any rank stops the job (torchrun ends the others).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from specdifftree.data.example import STAGES, Example
from specdifftree.errors import SDTError
from specdifftree.files import write_json
from specdifftree.machine import training_threads
from specdifftree.prior.checkpoint import RUN_MANIFEST as MANIFEST
from specdifftree.prior.checkpoint import read_run_manifest as read_manifest
from specdifftree.train.config import TrainConfig
from specdifftree.train.distributed import process_group
from specdifftree.train.examples import check_examples
from specdifftree.train.stage import FORECAST_STAGE, SPLITS, DatasetFn, Run, train_stage

UPSTREAM_STAGES = tuple(s for s in STAGES if s != FORECAST_STAGE)  # those with an official archive


def build_examples(run: Run, stage: str) -> dict[str, list[Example]]:
    """{split: checked examples} of one stage (`data.stages.build_stage` unless run.dataset_fn)."""
    if run.dataset_fn is None:
        from specdifftree.data.stages import build_stage

        run.dataset_fn = build_stage
    out = {}
    extra = {"upstream": True} if run.upstream and stage in UPSTREAM_STAGES else {}
    for split, n in zip(SPLITS, (run.cfg.n_train, run.cfg.n_val, run.cfg.n_test)):
        out[split] = list(run.dataset_fn(stage, split, n, seed=run.seed, data_dir=run.data_dir,
                                         horizon=run.cfg.horizon, context_length=run.cfg.context_length, **extra))
        check_examples(out[split], stage, split, run.cfg.encoder.patch, run.cfg.encoder.max_len)
    return out


def _manifest(run: Run) -> dict:
    return {"format": 1, "backbone": run.backbone_ref, "preset": run.cfg.preset, "seed": run.seed,
            "variant": run.cfg.variant, "config": run.cfg.to_dict(), "upstream": run.upstream, "final_checkpoint": None}


def _check_out(run: Run, stages: list[str]) -> dict:
    """The run's manifest: new, or the existing one when it describes the same run."""
    want = _manifest(run)
    have = read_manifest(run.out)
    if have is not None:
        same = all(have.get(k) == want[k] for k in ("backbone", "seed", "config")) and \
            have.get("variant", "bias") == want["variant"]
        if not same or bool(have.get("upstream")) != run.upstream:
            data = "upstream" if have.get("upstream") else "offline"
            raise SDTError(f"{run.out} holds a train-prior run with another backbone, seed, preset, variant or data "
                           f"({have.get('backbone')}, seed {have.get('seed')}, preset {have.get('preset')}, "
                           f"{data} data); use another --out")
        want["final_checkpoint"] = have.get("final_checkpoint")
    if not run.resume:
        started = [s for s in stages if (run.out / s).is_dir() and any((run.out / s).iterdir())]
        if started:
            raise SDTError(f"{run.out / started[0]} already exists; pass --resume to continue that run, "
                           "or choose another --out")
    return want


def _starting_parts(run: Run, stage: str):
    """The previous stage's best checkpoint in this run, else fresh parts (stage 1, or a lone stage)."""
    i = STAGES.index(stage)
    prev = run.out / STAGES[i - 1] / "checkpoints" / "best" if i > 0 else None
    if prev is not None and (prev / "config.json").is_file():
        return run.variant.load(prev, stage)
    if prev is not None:
        print(f"note: no {STAGES[i - 1]} checkpoint in {run.out}; {stage} starts from fresh parts", file=sys.stderr)
    return run.variant.fresh(stage)


def train_prior(stages: list[str], cfg: TrainConfig, backbone_ref: str, out: Path, seed: int = 0,
                resume: bool = False, wandb: bool = True, data_dir: Optional[Path] = None,
                dataset_fn: Optional[DatasetFn] = None, progress: bool = True, upstream: bool = False,
                placement=None) -> dict:
    """Train `stages` in curriculum order into `out`; returns {stage: test summary} (also OUT/summary.json;
    {} on the ranks other than 0 under torchrun).
    upstream: stages 1-5 read the official OpenTSLM data (downloaded on first use) instead of the
    offline generators and shared data; stage 6 reads M4 and ETT either way. placement: where the frozen
    backbone runs (a `prior.backbones.base.Placement`; default auto); its logits are cached on the host."""
    from specdifftree.prior.spec import absolute_spec

    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise SDTError(f"unknown stage '{unknown[0]}' (choose from all, {', '.join(STAGES)})")
    stages = sorted(set(stages), key=STAGES.index)
    out, backbone_ref = Path(out), absolute_spec(backbone_ref)
    with training_threads(cfg.threads):
        with process_group(placement) as dist:
            run = Run(out, cfg, backbone_ref, None, seed, resume, wandb, Path(data_dir) if data_dir else None,
                      dataset_fn, progress, upstream, dist=dist)
            _curriculum(run, stages, dist.placement(placement))
            if not dist.is_main:
                return {}
    return collect_summary(out)


def _curriculum(run: Run, stages: list[str], placement) -> None:
    """The stages in order; under torchrun every rank trains, rank 0 writes (ranks meet between stages)."""
    from specdifftree.prior.sources import open_backbone
    from specdifftree.progress import progress

    out, main = run.out, run.dist.is_main
    if run.dist.world > 1 and run.cfg.variant != "bias":
        raise SDTError("torchrun trains the bias variant only; run --variant sp in one process")
    manifest = _check_out(run, stages)
    run.dist.barrier()  # every rank has checked --out before rank 0 writes into it
    todo = [s for s in stages if not (out / s / "stage.json").is_file()]
    examples = {s: build_examples(run, s) for s in todo}  # bad data fails here, before any training
    run.backbone = open_backbone(run.backbone_ref, placement)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / MANIFEST, manifest)
    with progress(len(todo), "train-prior", "stages", enabled=run.progress and main, leave=True, each=True) as bar:
        for stage in stages:
            if stage in examples:
                bar.set_postfix_str(stage)
                parts = _starting_parts(run, stage)
                train_stage(run, stage, parts, examples.pop(stage))
                run.variant.finish(parts)
                bar.set_postfix_str(f"{stage} done")
                bar.update(1)
            if main:
                manifest["final_checkpoint"] = f"{stage}/checkpoints/best"
                write_json(out / MANIFEST, manifest)
                write_json(out / "summary.json", collect_summary(out))
            run.dist.barrier()  # the next stage starts from this one's checkpoint, on every rank


def collect_summary(out: Path) -> dict:
    """{stage: its stage.json} for every finished stage of the run, in curriculum order."""
    import json

    return {s: json.loads((out / s / "stage.json").read_text()) for s in STAGES if (out / s / "stage.json").is_file()}

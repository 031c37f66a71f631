"""One curriculum stage (`train_stage`): the epochs, validation, early stopping, the resume state
and the stage's files, for whichever variant `Run.variant` holds (train/bias.py, train/soft_prompt.py).

    run = Run(out, cfg, backbone_ref, backbone)                      # the variant from cfg.variant
    summary = train_stage(run, "stage1_mcq", parts, {"train": [...], "val": [...], "test": [...]})

Per epoch (`train_epoch`): AdamW steps on the variant's per-token NLL of answer + EOS, linear
warm-up then linear decay, gradient clipping; then validation loss / perplexity / accuracy
(`evaluate`); early stopping on the validation loss; an atomic resume state (`fit_stage`). The
stage ends by writing `checkpoints/best`, `test_predictions.jsonl` (greedy decoding; the forecast
grammar on stage 6), metrics.csv, plots, index.html and `stage.json` (the stage's test figures; its
presence marks the stage done).

A variant supplies the parts, the per-token NLL of a batch, the label choice, greedy decoding and
the checkpoint format: fresh, load, modules, param_groups, train, eval, prepare, nll, choose,
decode, prompt_text, save, finish (`bias.BiasVariant` is the reference).

Determinism: epoch e of stage s reseeds torch and the data order from (seed, s, e), and torch
runs with `cfg.threads` threads and deterministic algorithms (`machine.training_threads`), so a run resumed after a kill ends with the same files as an
uninterrupted one (metrics.csv and checkpoints/best byte for byte).

Under torchrun each rank trains on its share of every global batch (`distributed.shard`): it
computes the NLL sum of the batch members it owns, scaled by N / (the batch's answer tokens), and
DDP averages the gradients, so every step is the one-process step of the same global batch up to
the order of float sums. Validation figures are gathered from the ranks' shares
(`evaluate_shards`). Rank 0 alone writes checkpoints, the resume state, metrics, plots, test
predictions and W&B; the test split is evaluated there.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from specdifftree.data.example import STAGES, Example
from specdifftree.files import write_json
from specdifftree.machine import seeded
from specdifftree.prior.model import PriorParts
from specdifftree.train.config import TrainConfig
from specdifftree.train.distributed import Dist, Shard, shard, zero_loss
from specdifftree.train.examples import TokenizedSplit, tokenize_split
from specdifftree.train.metrics import chance, fact_accuracy, label_metrics, significance
from specdifftree.train.state import STATE, load_state, optimizer_tensors, restore_optimizer, save_state

FORECAST_STAGE = "stage6_forecast"
SPLITS = ("train", "val", "test")
DatasetFn = Callable[..., list]  # build_stage(name, split, n, seed=, data_dir=, horizon=, context_length=[, upstream=])


@dataclass
class Run:
    """What every stage of one `train_prior` call shares."""

    out: Path
    cfg: TrainConfig
    backbone_ref: str
    backbone: object  # Backbone
    seed: int = 0
    resume: bool = False
    wandb: bool = False
    data_dir: Optional[Path] = None
    dataset_fn: Optional[DatasetFn] = None
    progress: bool = True
    upstream: bool = False  # stages 1-5 from the official OpenTSLM data (data/upstream.py)
    variant: object = None  # bias.BiasVariant or soft_prompt.SPVariant, from cfg.variant
    dist: Dist = field(default_factory=Dist)  # this process's rank under torchrun

    def __post_init__(self):
        if self.variant is None:
            self.variant = make_variant(self)


@dataclass
class StageState:
    """Everything an epoch boundary must keep (saved in OUT/<stage>/state.safetensors)."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best_val: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the last improvement
    stopped: bool = False  # early stopping fired
    rows: list = field(default_factory=list)


def make_variant(run: Run):
    """The variant `run.cfg.variant` names: "bias" (train/bias.py) or "sp" (train/soft_prompt.py)."""
    if run.cfg.variant == "sp":
        from specdifftree.train.soft_prompt import SPVariant

        return SPVariant(run)
    from specdifftree.train.bias import BiasVariant

    return BiasVariant(run)


# ------------------------------------------------------------------------------------------- epochs


def _batches(n: int, size: int) -> list[list[int]]:
    return [list(range(lo, min(n, lo + size))) for lo in range(0, n, size)]


@torch.no_grad()
def evaluate(run: Run, parts, split: TokenizedSplit, base: bool = False) -> dict:
    """Over a split: per-token NLL, next-token accuracy, each example's NLL sum ("example_nll" [n]),
    the variant's extras (bias variant: "bias" [n, V]) and, on label stages, each example's chosen
    label ("chosen"). base: the frozen backbone alone (bias variant: bias 0; sp: no series)."""
    v = run.variant
    v.eval(parts)
    sums, hits, extras = [], 0, []
    for idx in _batches(len(split.examples), run.cfg.batch_size):
        nll, owner, hit, extra = v.nll(parts, split, idx, base=base)
        nll = nll.double()
        sums.append(torch.zeros(len(idx), dtype=torch.float64).index_add(0, owner, nll).numpy())
        hits += int(hit.sum())
        extras.append(extra)
    n_tok = sum(len(a) for a in split.answer_ids)
    example_nll = np.concatenate(sums)
    ev = {"nll": float(example_nll.sum()) / n_tok, "token_accuracy": hits / n_tok, "tokens": n_tok,
          "example_nll": example_nll, "hits": hits}
    if extras[0] is not None:
        ev["bias"] = np.concatenate(extras)
    ev["chosen"] = v.choose(parts, split, ev, base) if split.labelled else None
    return ev


def evaluate_shards(run: Run, parts, part: Shard) -> dict:
    """`evaluate` over the whole split from every rank's share: per-token NLL, token accuracy,
    tokens, each example's NLL sum and chosen label (in the split's order)."""
    ev = evaluate(run, parts, part.split)
    if run.dist.world == 1:
        return ev
    n = len(part.full.examples)
    example_nll, chosen = np.zeros(n), [None] * n
    shares = run.dist.gather((part.ids, ev["example_nll"], ev["hits"], ev["tokens"], ev["chosen"]))
    for ids, nll, _, _, picked in shares:
        example_nll[ids] = nll
        for i, c in zip(ids, picked or []):
            chosen[i] = c
    hits, tokens = sum(s[2] for s in shares), sum(s[3] for s in shares)
    return {"nll": float(example_nll.sum()) / tokens, "token_accuracy": hits / tokens, "tokens": tokens,
            "example_nll": example_nll, "hits": hits, "chosen": chosen if part.full.labelled else None}


def batch_loss(run: Run, parts, split: TokenizedSplit, idx: list[int], tokens: int):
    """(loss, NLL sum, answer tokens) of this rank's members `idx` of a global batch of `tokens`
    answer tokens: the NLL sum scaled by world / tokens (DDP's mean over ranks makes it the batch's mean)."""
    if not idx:
        return zero_loss(run.variant.modules(parts)), 0.0, 0
    nll = run.variant.nll(parts, split, idx)[0]
    return nll.sum() * (run.dist.world / tokens), float(nll.detach().double().sum()), len(nll)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1 over `warmup` steps, then linear decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _epoch_seed(seed: int, stage: str, epoch: int) -> list[int]:
    return [seed, STAGES.index(stage), epoch]


def train_epoch(run: Run, parts, opt, part: Shard, st: StageState, stage: str, total_steps: int, bar,
                loss_fn) -> float:
    """One pass over the train split in the (seed, stage, epoch) order, each rank on the members
    of every batch it owns (`loss_fn`: `batch_loss`, through DDP under torchrun). Returns the
    per-token train loss."""
    cfg, v = run.cfg, run.variant
    rng = np.random.default_rng(_epoch_seed(run.seed, stage, st.epoch + 1))
    with seeded(int(rng.integers(2**31))):  # this epoch's torch stream (dropout); the caller's again after it
        order = rng.permutation(len(part.full.examples))
        local, lengths = part.local, [len(a) for a in part.full.answer_ids]
        v.train(parts)
        params = [p for g in opt.param_groups for p in g["params"]]
        warmup = max(1, round(cfg.warmup_frac * total_steps))
        loss_sum, tokens = 0.0, 0
        for lo in range(0, len(order), cfg.batch_size):
            idx = order[lo: lo + cfg.batch_size].tolist()
            batch_tokens = sum(lengths[i] for i in idx)
            loss, nll_sum, n_tok = loss_fn(part.split, [local[i] for i in idx if i in local], batch_tokens)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * _lr_factor(st.step, warmup, total_steps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            st.step += 1
            loss_sum += nll_sum
            tokens += n_tok
            bar.set_postfix(loss=f"{loss.item() / run.dist.world:.4f}")
            bar.update(1)
        v.eval(parts)
    loss_sum, tokens = run.dist.sum([loss_sum, tokens])
    return loss_sum / max(1, tokens)


def accuracy(split: TokenizedSplit, ev: dict) -> tuple[float, float]:
    """(accuracy, macro recall): on label stages the prior's choice among the options (likelihood
    ranking, see train/examples.py); else next-token accuracy on the answer and NaN."""
    if ev["chosen"] is None:
        return ev["token_accuracy"], math.nan
    m = label_metrics([e.label for e in split.examples], ev["chosen"])
    return m["accuracy"], m["macro_recall"]


# ------------------------------------------------------------------------------------------- one stage


def _parts_tensors(run: Run, parts, prefix: str) -> dict:
    """A copy of the trainable modules' tensors, keyed "<prefix><module>.<key>"."""
    return {f"{prefix}{m}.{k}": v.detach().clone() for m, module in run.variant.modules(parts).items()
            for k, v in module.state_dict().items()}


def _load_parts_tensors(run: Run, parts, tensors: dict, prefix: str) -> None:
    for m, module in run.variant.modules(parts).items():
        sd = {k[len(prefix) + len(m) + 1:]: v for k, v in tensors.items() if k.startswith(f"{prefix}{m}.")}
        module.load_state_dict(sd, strict=True)


def _save_checkpoint_dir(run: Run, parts, target: Path, extra: dict) -> None:
    """Write a prior checkpoint into a fresh sibling directory, then swap it in (never half-written)."""
    from specdifftree.files import replace_dir

    tmp = target.with_name(f"{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    run.variant.save(parts, tmp, extra)
    replace_dir(tmp, target)


def _save_state(run: Run, path: Path, parts, best: dict, opt, st: StageState) -> None:
    opt_tensors, groups = optimizer_tensors(opt)
    meta = {"epoch": st.epoch, "step": st.step, "best_val": st.best_val, "best_epoch": st.best_epoch,
            "bad_epochs": st.bad_epochs, "stopped": st.stopped, "rows": st.rows, "param_groups": groups}
    save_state(path, {**_parts_tensors(run, parts, ""), **best, **opt_tensors}, meta)


def _restore_state(run: Run, path: Path, parts, opt) -> tuple[StageState, dict]:
    tensors, meta = load_state(path)
    _load_parts_tensors(run, parts, tensors, "")
    restore_optimizer(opt, tensors, meta.pop("param_groups"))
    best = {k: v for k, v in tensors.items() if k.startswith("best.")}
    meta["best_val"] = math.inf if meta["best_val"] is None else meta["best_val"]
    return StageState(**meta), best


def fit_stage(run: Run, stage: str, parts: PriorParts, data: dict[str, Shard], tracker) -> StageState:
    """The epochs of one stage (resumed from OUT/<stage>/state.safetensors with --resume), with early
    stopping; leaves `parts` at the best validation loss. `data`: this rank's train and val shares."""
    from specdifftree.progress import progress
    from specdifftree.train.report import write_metrics_csv

    cfg, sdir = run.cfg, run.out / stage
    opt = torch.optim.AdamW(run.variant.param_groups(parts), weight_decay=cfg.weight_decay)
    st, best = StageState(), _parts_tensors(run, parts, "best.")
    if run.resume and (sdir / STATE).is_file():
        st, best = _restore_state(run, sdir / STATE, parts, opt)
    main = run.dist.is_main
    if main:
        write_metrics_csv(sdir / "metrics.csv", st.rows)
    loss_fn = run.dist.wrap(run.variant.modules(parts), lambda *a: batch_loss(run, parts, *a))
    steps, epochs = math.ceil(len(data["train"].full.examples) / cfg.batch_size), cfg.epochs_for(stage)
    bar = progress(epochs * steps, stage, "steps", initial=st.epoch * steps, enabled=run.progress and main,
                   leave=True)
    while not st.stopped and st.epoch < epochs:
        bar.set_description(f"{stage} epoch {st.epoch + 1}/{epochs}")
        train_loss = train_epoch(run, parts, opt, data["train"], st, stage, epochs * steps, bar, loss_fn)
        ev = evaluate_shards(run, parts, data["val"])
        acc, recall = accuracy(data["val"].full, ev)
        st.epoch += 1
        row = {"epoch": st.epoch, "train_loss": train_loss, "val_loss": ev["nll"],
               "val_perplexity": math.exp(ev["nll"]), "val_accuracy": acc, "val_macro_recall": recall}
        st.rows.append(row)
        if ev["nll"] < st.best_val:
            st.best_val, st.best_epoch, st.bad_epochs = ev["nll"], st.epoch, 0
            best = _parts_tensors(run, parts, "best.")
        else:
            st.bad_epochs += 1
        st.stopped = st.bad_epochs >= cfg.patience
        if main:
            _save_state(run, sdir / STATE, parts, best, opt, st)  # the epoch's commit point
            write_metrics_csv(sdir / "metrics.csv", st.rows)
        tracker.log(row, step=st.epoch)
        bar.set_postfix(loss=f"{train_loss:.4f}", val=f"{ev['nll']:.4f}")
    bar.close()
    _load_parts_tensors(run, parts, best, "best.")
    return st


def train_stage(run: Run, stage: str, parts: PriorParts, examples: dict[str, list[Example]]) -> dict:
    """Train one stage from `parts` (updated in place to the stage's best) on {split: examples} and
    write its files; returns its test summary."""
    from specdifftree.tracking import NoTracker, Tracker
    from specdifftree.train.report import plot_curves, write_index

    cfg, sdir = run.cfg, run.out / stage
    sdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data = {s: tokenize_split(examples[s], run.backbone) for s in SPLITS}
    own = {s: shard(data[s], run.dist) for s in ("train", "val")}
    for s in own:  # each rank: the backbone logits of its own examples
        run.variant.prepare(own[s].split, f"{stage} {s}")
    if not run.dist.is_main:
        fit_stage(run, stage, parts, own, NoTracker())
        return {}
    with Tracker(sdir, name=f"{run.out.name}/{stage}", group=run.out.name, job_type="train-prior",
                 config={"stage": stage, "backbone": run.backbone_ref, "seed": run.seed, **cfg.to_dict()},
                 enabled=run.wandb) as tracker:
        st = fit_stage(run, stage, parts, own, tracker)
        _save_checkpoint_dir(run, parts, sdir / "checkpoints" / "best",
                             {"stage": stage, "epoch": st.best_epoch, "val_loss": st.best_val})
        summary, predictions = test_stage(run, stage, data["test"], parts)
        summary.update(best_epoch=st.best_epoch, epochs_run=st.epoch, early_stopped=st.stopped,
                       best_val_loss=st.best_val, wall_s=round(time.time() - t0, 1))
        pngs = plot_curves(st.rows, sdir)
        write_index(sdir, stage, summary, st.rows, pngs, predictions[: cfg.n_show])
        tracker.summary(summary)
        for png in pngs:
            tracker.image(f"{stage}/{png.stem}", png)
        tracker.table(f"{stage}/test_predictions", ["prompt", "generated", "gold"],
                      [[p["prompt"], p["generated"], p["gold"]] for p in predictions[: cfg.n_show]])
    write_json(sdir / "stage.json", summary)  # last: marks the stage done
    return summary


def test_stage(run: Run, stage: str, test: TokenizedSplit, parts: PriorParts) -> tuple[dict, list[dict]]:
    """Held-out figures: per-token NLL of the answers under the trained prior and under the frozen
    backbone alone (bias 0), and the share of test answers more probable under the prior; greedy
    test predictions; on label stages the accuracy of the prior's
    choice (trained and backbone alone) against chance, and of the labels parsed from the greedy text."""
    import json

    from specdifftree.files import write_atomic

    run.variant.prepare(test, f"{stage} test")
    ev = evaluate(run, parts, test)
    ev0 = evaluate(run, parts, test, base=True)
    summary = {"stage": stage, "n_test": len(test.examples), "test_tokens": ev["tokens"],
               "test_nll_prior": ev["nll"], "test_nll_backbone": ev0["nll"],
               "test_share_of_answers_better": float(np.mean(ev["example_nll"] < ev0["example_nll"])),
               "test_token_accuracy_prior": ev["token_accuracy"], "test_token_accuracy_backbone": ev0["token_accuracy"]}
    texts = run.variant.decode(test, parts, ev, forecast=stage == FORECAST_STAGE)
    predictions = [{"prompt": run.variant.prompt_text(test, i), "generated": t, "gold": ex.answer}
                   for i, (ex, t) in enumerate(zip(test.examples, texts))]
    if ev["chosen"] is not None:
        gold = [ex.label for ex in test.examples]
        chosen = ev["chosen"]
        from specdifftree.data.stages import parse_label

        parsed = [parse_label(stage, t, ex.options) for t, ex in zip(texts, test.examples)]
        m, m0 = label_metrics(gold, chosen), label_metrics(gold, ev0["chosen"])
        summary.update({"test_accuracy": m["accuracy"], "test_macro_recall": m["macro_recall"],
                        "test_accuracy_backbone": m0["accuracy"], "test_macro_recall_backbone": m0["macro_recall"],
                        **chance(gold, [ex.options for ex in test.examples]),
                        "test_accuracy_generated": label_metrics(gold, parsed)["accuracy"]})
        summary.update({f"test_accuracy_{k}": v for k, v in
                        significance(gold, chosen, ev0["chosen"], summary["chance_uniform"]).items()})
        for p, ex, c, c0, lab in zip(predictions, test.examples, chosen, ev0["chosen"], parsed):
            p.update(label=ex.label, chosen_label=c, chosen_label_backbone=c0, parsed_label=lab)
    if all("facts" in ex.meta for ex in test.examples) and test.examples:
        summary.update(_caption_facts(run, test, parts, ev0, texts, predictions))
    lines = "".join(json.dumps(p) + "\n" for p in predictions)
    write_atomic(run.out / stage / "test_predictions.jsonl", lines.encode())
    return summary, predictions


def _caption_facts(run: Run, test: TokenizedSplit, parts: PriorParts, ev0: dict, texts: list[str],
                   predictions: list[dict]) -> dict:
    """Per-level fact accuracy of the greedy captions, trained prior and backbone alone (greedy
    under `ev0`, the evaluation of the backbone alone); adds each example's scores (and the
    backbone's text) to its prediction."""
    facts = [ex.meta["facts"] for ex in test.examples]
    texts0 = run.variant.decode(test, parts, ev0, forecast=False)
    prior, per = fact_accuracy(facts, texts)
    alone, per0 = fact_accuracy(facts, texts0)
    for p, ex, s, s0, t0 in zip(predictions, test.examples, per, per0, texts0):
        p.update(variant=ex.meta.get("variant"), facts_prior=s, facts_backbone=s0, generated_backbone=t0)
    out = {f"test_fact_accuracy_{k}_prior": v for k, v in prior.items() if not k.startswith("n_")}
    out.update({f"test_fact_accuracy_{k}_backbone": v for k, v in alone.items() if not k.startswith("n_")})
    out.update({f"test_fact_{k}": v for k, v in prior.items() if k.startswith("n_")})
    return out

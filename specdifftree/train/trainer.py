"""Curriculum training of the prior's encoder and logit-bias head, the LLM frozen (DESIGN.md 7).

    summary = train_prior(["stage1_mcq", ...], TrainConfig.from_name("smoke"), "default", Path("runs/prior"))

Per stage (`train_stage`): build the train / val / test examples (`data.stages.build_stage`),
cache the frozen backbone's logits at every answer position of train and val once
(`decode.answer_logits`), then per epoch: AdamW steps on the per-token NLL of answer + EOS under
log_softmax(llm_logits + bias(series)), linear warm-up then linear decay, gradient clipping;
validation loss / perplexity / accuracy; early stopping on the validation loss; an atomic resume
state. The stage starts from the previous stage's best checkpoint and ends by writing
`checkpoints/best`, `test_predictions.jsonl` (greedy decoding with the trained bias; the forecast
grammar on stage 6), metrics.csv, plots, index.html and `stage.json` (the stage's test figures;
its presence marks the stage done).

Several series in one example (e.g. three accelerometer axes): each series is encoded and
mean-pooled on its own, and the example's context vector is the mean of those pooled vectors
before the head. This is invariant to the order of the series, and reduces exactly to the
single-series bias that `sdt search` computes (`PriorParts.bias`) for one series.

Variants (`cfg.variant`, `sdt train-prior --variant`): "bias" is the above (`BiasVariant`); "sp"
trains an encoder + soft-prompt projector through the frozen LLM in OpenTSLM-SP's layout, LoRA
optional from stage 3 (`train/soft_prompt.py`, `SPVariant`). Both go through the same epochs,
resume state, metrics, plots and test predictions; a variant supplies the parts, the per-token
NLL of a batch, the label choice, greedy decoding and the checkpoint format.

Determinism: epoch e of stage s reseeds torch and the data order from (seed, s, e), and torch
runs with `cfg.threads` threads, so a run resumed after a kill ends with the same files as an
uninterrupted one (metrics.csv and checkpoints/best byte for byte).

Under torchrun (`torchrun --nproc-per-node N sdt train-prior ...`, train/distributed.py) rank r
owns the train and val examples i with i % N == r and caches the backbone logits of those alone.
Every rank walks the same global batches; each computes the NLL sum of the batch members it owns,
scaled by N / (the batch's answer tokens), and DDP averages the gradients, so every step is the
one-process step of the same global batch up to the order of float sums. Validation figures are
gathered from the ranks' shares. Rank 0 alone writes checkpoints, the resume state, metrics,
plots, test predictions and W&B; the test split is evaluated there. A kill of any rank stops the
job (torchrun ends the others); `--resume` continues from the last committed epoch on every rank.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from specdifftree.data.example import STAGES, Example
from specdifftree.errors import SDTError
from specdifftree.prior.model import PriorParts
from specdifftree.train.config import TrainConfig
from specdifftree.train.decode import answer_logits, decode_answers
from specdifftree.train.examples import TokenizedSplit, check_examples, label_choices, tokenize_split
from specdifftree.train.metrics import answer_nll, chance, fact_accuracy, label_metrics, next_token_hits
from specdifftree.prior.checkpoint import RUN_MANIFEST as MANIFEST
from specdifftree.prior.checkpoint import read_run_manifest as read_manifest
from specdifftree.train.state import (STATE, load_state, optimizer_tensors,
                                      restore_optimizer, save_state)
from specdifftree.files import write_json
from specdifftree.train.distributed import Dist, process_group, zero_loss

FORECAST_STAGE = "stage6_forecast"
UPSTREAM_STAGES = tuple(s for s in STAGES if s != FORECAST_STAGE)  # those with an official archive
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
    variant: object = None  # BiasVariant or soft_prompt.SPVariant, from cfg.variant
    dist: Dist = field(default_factory=Dist)  # this process's rank under torchrun

    def __post_init__(self):
        if self.variant is None:
            self.variant = _variant(self)


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


@dataclass
class Shard:
    """This rank's examples of a split (all of them in one process), and where they sit in it."""

    split: TokenizedSplit  # the examples this rank owns, in order
    ids: list[int]  # their positions in the whole split
    full: TokenizedSplit  # the whole split

    @property
    def local(self) -> dict[int, int]:
        return {i: k for k, i in enumerate(self.ids)}


def shard(split: TokenizedSplit, dist: Dist) -> Shard:
    if dist.world == 1:
        return Shard(split, list(range(len(split.examples))), split)
    ids = dist.owned(len(split.examples))
    own = TokenizedSplit([split.examples[i] for i in ids], [split.prompt_ids[i] for i in ids],
                         [split.answer_ids[i] for i in ids])
    return Shard(own, ids, split)


# ------------------------------------------------------------------------------------------- data


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


def cache_logits(run: Run, split: TokenizedSplit, what: str) -> None:
    """Teacher-forced backbone logits of the gold answers, and of every option's ending on label stages."""
    from tqdm.auto import tqdm

    todo = (split.cached is None) + (split.labelled and split.choices is None)
    with tqdm(total=todo * len(split.examples), desc=f"backbone logits ({what})", file=sys.stderr, leave=False,
              disable=None if run.progress else True) as bar:
        if split.cached is None:
            split.cached = answer_logits(run.backbone, split.prompt_ids, split.answer_ids, run.cfg.backbone_batch,
                                         progress=bar.update)
        if split.labelled and split.choices is None:
            split.choices = label_choices(split, run.backbone, run.cfg.backbone_batch, progress=bar.update)


# ------------------------------------------------------------------------------------------- model


def series_batch(examples: list[Example]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All series of the examples, right-padded: x [S, L] float32, mask [S, L] bool, owner [S] (example)."""
    series = [(i, np.asarray(x, dtype=np.float32)) for i, ex in enumerate(examples) for x in ex.series]
    L = max(len(x) for _, x in series)
    x = np.zeros((len(series), L), np.float32)
    mask = np.zeros((len(series), L), bool)
    for s, (_, v) in enumerate(series):
        x[s, : len(v)], mask[s, : len(v)] = v, True
    owner = torch.tensor([i for i, _ in series], dtype=torch.long)
    return torch.from_numpy(x), torch.from_numpy(mask), owner


def context_bias(parts: PriorParts, examples: list[Example]) -> torch.Tensor:
    """The logit bias of each example: head(mean over its series of the pooled encoding).  -> [B, V]"""
    x, mask, owner = series_batch(examples)
    h, patch_mask = parts.encode(x, mask)
    pooled = parts.encoder.pool(h, patch_mask)  # [S, W]
    B = len(examples)
    summed = torch.zeros(B, pooled.shape[1], dtype=pooled.dtype).index_add(0, owner, pooled)
    counts = torch.bincount(owner, minlength=B).to(pooled.dtype)
    return parts.head(summed / counts[:, None])


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
    torch.manual_seed(int(rng.integers(2**31)))
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
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item() / run.dist.world:.4f}")
    v.eval(parts)
    loss_sum, tokens = run.dist.sum([loss_sum, tokens])
    return loss_sum / max(1, tokens)


# ------------------------------------------------------------------------------------------- decoding


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
    from tqdm.auto import tqdm

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
    bar = tqdm(total=epochs * steps, initial=st.epoch * steps, disable=None if run.progress and main else True,
               file=sys.stderr)
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
        for p, ex, c, lab in zip(predictions, test.examples, chosen, parsed):
            p.update(label=ex.label, chosen_label=c, parsed_label=lab)
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


# ------------------------------------------------------------------------------------------- curriculum


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


class BiasVariant:
    """Encoder + logit-bias head, trained over the frozen backbone's cached logits (the default)."""

    def __init__(self, run: Run):
        self.run = run

    def fresh(self, stage: str) -> PriorParts:
        run = self.run
        return PriorParts.fresh(run.backbone.vocab_size, run.backbone_ref, seed=run.seed, encoder_config=run.cfg.encoder)

    def load(self, directory: Path, stage: str) -> PriorParts:
        parts = PriorParts.load(directory)
        parts.backbone_ref = self.run.backbone_ref
        return parts

    def modules(self, parts: PriorParts) -> dict:
        return {"encoder": parts.encoder, "head": parts.head}

    def param_groups(self, parts: PriorParts) -> list[dict]:
        lr = self.run.cfg.lr
        return [{"params": list(parts.encoder.parameters()) + list(parts.head.parameters()), "lr": lr, "base_lr": lr}]

    def train(self, parts: PriorParts) -> None:
        parts.encoder.train(), parts.head.train()

    def eval(self, parts: PriorParts) -> None:
        parts.encoder.eval(), parts.head.eval()

    def prepare(self, split: TokenizedSplit, what: str) -> None:
        cache_logits(self.run, split, what)

    def nll(self, parts: PriorParts, split: TokenizedSplit, idx: list[int], base: bool = False):
        """(nll [M], owner [M], hits [M], biases [len(idx), V] numpy) under log_softmax(logits + bias)."""
        logits, targets, owner = split.cached.rows(idx)
        bias = context_bias(parts, [split.examples[i] for i in idx])
        if base:
            bias = torch.zeros_like(bias)
        hits = next_token_hits(logits, targets, bias, owner)
        return answer_nll(logits, targets, bias, owner), owner, hits, bias.detach().float().numpy()

    def choose(self, parts: PriorParts, split: TokenizedSplit, ev: dict, base: bool) -> list:
        return split.choices.predicted(torch.from_numpy(ev["bias"]))

    def decode(self, split: TokenizedSplit, parts: PriorParts, ev: dict, forecast: bool) -> list[str]:
        return decode_answers(self.run.backbone, split, ev["bias"], self.run.cfg, forecast)

    def prompt_text(self, split: TokenizedSplit, i: int) -> str:
        return split.examples[i].prompt()

    def save(self, parts: PriorParts, target: Path, extra: dict) -> None:
        from specdifftree.prior.checkpoint import parts_config, save_checkpoint

        save_checkpoint(target, {"encoder": parts.encoder, "head": parts.head},
                        {**parts_config(parts.encoder, parts.head, backbone=parts.backbone_ref), **extra})

    def finish(self, parts: PriorParts) -> None:
        """Nothing to undo on the backbone."""


def train_prior(stages: list[str], cfg: TrainConfig, backbone_ref: str, out: Path, seed: int = 0,
                resume: bool = False, wandb: bool = True, data_dir: Optional[Path] = None,
                dataset_fn: Optional[DatasetFn] = None, progress: bool = True, upstream: bool = False,
                placement=None) -> dict:
    """Train `stages` in curriculum order into `out`; returns {stage: test summary} (also OUT/summary.json;
    {} on the ranks other than 0 under torchrun).
    upstream: stages 1-5 read the official OpenTSLM data (downloaded on first use) instead of the
    offline generators and shared data; stage 6 reads M4 and ETT either way. placement: where the frozen
    backbone runs (a `prior.backbones.base.Placement`; default auto); its logits are cached on the host."""
    from specdifftree.problem import absolute_spec

    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise SDTError(f"unknown stage '{unknown[0]}' (choose from all, {', '.join(STAGES)})")
    stages = sorted(set(stages), key=STAGES.index)
    out, backbone_ref = Path(out), absolute_spec(backbone_ref)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with process_group(placement) as dist:
            run = Run(out, cfg, backbone_ref, None, seed, resume, wandb, Path(data_dir) if data_dir else None,
                      dataset_fn, progress, upstream, dist=dist)
            _curriculum(run, stages, dist.placement(placement))
            if not dist.is_main:
                return {}
    finally:
        torch.set_num_threads(threads)
    return collect_summary(out)


def _curriculum(run: Run, stages: list[str], placement) -> None:
    """The stages in order; under torchrun every rank trains, rank 0 writes (ranks meet between stages)."""
    from specdifftree.problem import open_backbone

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
    for stage in stages:
        if stage in examples:
            parts = _starting_parts(run, stage)
            train_stage(run, stage, parts, examples.pop(stage))
            run.variant.finish(parts)
        if main:
            manifest["final_checkpoint"] = f"{stage}/checkpoints/best"
            write_json(out / MANIFEST, manifest)
            write_json(out / "summary.json", collect_summary(out))
        run.dist.barrier()  # the next stage starts from this one's checkpoint, on every rank


def _variant(run: Run):
    if run.cfg.variant == "sp":
        from specdifftree.train.soft_prompt import SPVariant

        return SPVariant(run)
    return BiasVariant(run)


def collect_summary(out: Path) -> dict:
    """{stage: its stage.json} for every finished stage of the run, in curriculum order."""
    import json

    return {s: json.loads((out / s / "stage.json").read_text()) for s in STAGES if (out / s / "stage.json").is_file()}

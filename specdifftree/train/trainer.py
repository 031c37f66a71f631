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

Determinism: epoch e of stage s reseeds torch and the data order from (seed, s, e), and torch
runs with `cfg.threads` threads, so a run resumed after a kill ends with the same files as an
uninterrupted one (metrics.csv and checkpoints/best byte for byte).
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
from specdifftree.train.decode import answer_logits, greedy
from specdifftree.train.examples import TokenizedSplit, check_examples, label_choices, tokenize_split
from specdifftree.train.metrics import answer_nll, chance, label_metrics, next_token_hits
from specdifftree.prior.checkpoint import RUN_MANIFEST as MANIFEST
from specdifftree.prior.checkpoint import read_run_manifest as read_manifest
from specdifftree.train.state import (STATE, load_state, optimizer_tensors,
                                      restore_optimizer, save_state)
from specdifftree.files import write_json

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
def evaluate(parts: PriorParts, split: TokenizedSplit, batch: int, zero_bias: bool = False) -> dict:
    """Over a split: per-token NLL, next-token accuracy, each example's NLL sum ("example_nll" [n])
    and the biases ("bias" [n, V], numpy)."""
    parts.encoder.eval(), parts.head.eval()
    sums, hits, biases = [], 0, []
    for idx in _batches(len(split.examples), batch):
        logits, targets, owner = split.cached.rows(idx)
        bias = context_bias(parts, [split.examples[i] for i in idx])
        if zero_bias:
            bias = torch.zeros_like(bias)
        nll = answer_nll(logits, targets, bias, owner).double()
        sums.append(torch.zeros(len(idx), dtype=torch.float64).index_add(0, owner, nll).numpy())
        hits += int(next_token_hits(logits, targets, bias, owner).sum())
        biases.append(bias.float().numpy())
    n_tok = len(split.cached.targets)
    example_nll = np.concatenate(sums)
    return {"nll": float(example_nll.sum()) / n_tok, "token_accuracy": hits / n_tok, "tokens": n_tok,
            "example_nll": example_nll, "bias": np.concatenate(biases)}


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1 over `warmup` steps, then linear decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _epoch_seed(seed: int, stage: str, epoch: int) -> list[int]:
    return [seed, STAGES.index(stage), epoch]


def train_epoch(parts: PriorParts, opt, split: TokenizedSplit, cfg: TrainConfig, st: StageState, stage: str, seed: int,
                total_steps: int, bar) -> float:
    """One pass over the train split in the (seed, stage, epoch) order. Returns the per-token train loss."""
    rng = np.random.default_rng(_epoch_seed(seed, stage, st.epoch + 1))
    torch.manual_seed(int(rng.integers(2**31)))
    order = rng.permutation(len(split.examples))
    parts.encoder.train(), parts.head.train()
    params = [p for g in opt.param_groups for p in g["params"]]
    warmup = max(1, round(cfg.warmup_frac * total_steps))
    loss_sum, tokens = 0.0, 0
    for lo in range(0, len(order), cfg.batch_size):
        idx = order[lo: lo + cfg.batch_size].tolist()
        logits, targets, owner = split.cached.rows(idx)
        nll = answer_nll(logits, targets, context_bias(parts, [split.examples[i] for i in idx]), owner)
        loss = nll.mean()
        for g in opt.param_groups:
            g["lr"] = cfg.lr * _lr_factor(st.step, warmup, total_steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        st.step += 1
        loss_sum += float(nll.detach().double().sum())
        tokens += len(targets)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    parts.encoder.eval(), parts.head.eval()
    return loss_sum / max(1, tokens)


# ------------------------------------------------------------------------------------------- decoding


def decode_split(run: Run, stage: str, split: TokenizedSplit, bias: np.ndarray) -> list[str]:
    """Greedy answers (text) under the given biases [n, V]; on stage 6 under the forecast grammar
    (exactly as many numbers as the gold answer holds), as `sdt search` decodes."""
    max_new = max(len(a) for a in split.answer_ids) - 1 + run.cfg.max_new_slack
    grammars = None
    if stage == FORECAST_STAGE:
        from specdifftree.prior.constraint import ForecastGrammar

        strings, sep = run.backbone.token_strings(), ","  # data.prompts.forecast_codec's separator
        grammars = [ForecastGrammar(strings, int(run.backbone.eos_id), len(ex.answer.split(sep)), sep=sep)
                    for ex in split.examples]
        max_new = max(max_new, max(g.max_tokens() for g in grammars))
    ids = greedy(run.backbone, split.prompt_ids, bias.astype(np.float32), max_new, grammars, run.cfg.backbone_batch)
    return [run.backbone.detokenize(t) for t in ids]


def accuracy(split: TokenizedSplit, ev: dict) -> tuple[float, float]:
    """(accuracy, macro recall): on label stages the prior's choice among the options (likelihood
    ranking, see train/examples.py); else next-token accuracy on the answer and NaN."""
    if split.choices is None:
        return ev["token_accuracy"], math.nan
    m = label_metrics([e.label for e in split.examples], split.choices.predicted(torch.from_numpy(ev["bias"])))
    return m["accuracy"], m["macro_recall"]


# ------------------------------------------------------------------------------------------- one stage


def _parts_tensors(parts: PriorParts, prefix: str) -> dict:
    """A copy of the encoder's and head's tensors, keyed "<prefix><module>.<key>"."""
    return {f"{prefix}{m}.{k}": v.detach().clone() for m in ("encoder", "head")
            for k, v in getattr(parts, m).state_dict().items()}


def _load_parts_tensors(parts: PriorParts, tensors: dict, prefix: str) -> None:
    for m in ("encoder", "head"):
        sd = {k[len(prefix) + len(m) + 1:]: v for k, v in tensors.items() if k.startswith(f"{prefix}{m}.")}
        getattr(parts, m).load_state_dict(sd, strict=True)


def _save_checkpoint_dir(parts: PriorParts, target: Path, extra: dict) -> None:
    """Write a prior checkpoint into a fresh sibling directory, then swap it in (never half-written)."""
    from specdifftree.prior.checkpoint import parts_config, save_checkpoint
    from specdifftree.files import replace_dir

    tmp = target.with_name(f"{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(tmp, {"encoder": parts.encoder, "head": parts.head},
                    {**parts_config(parts.encoder, parts.head, backbone=parts.backbone_ref), **extra})
    replace_dir(tmp, target)


def _save_state(path: Path, parts: PriorParts, best: dict, opt, st: StageState) -> None:
    opt_tensors, groups = optimizer_tensors(opt)
    meta = {"epoch": st.epoch, "step": st.step, "best_val": st.best_val, "best_epoch": st.best_epoch,
            "bad_epochs": st.bad_epochs, "stopped": st.stopped, "rows": st.rows, "param_groups": groups}
    save_state(path, {**_parts_tensors(parts, ""), **best, **opt_tensors}, meta)


def _restore_state(path: Path, parts: PriorParts, opt) -> tuple[StageState, dict]:
    tensors, meta = load_state(path)
    _load_parts_tensors(parts, tensors, "")
    restore_optimizer(opt, tensors, meta.pop("param_groups"))
    best = {k: v for k, v in tensors.items() if k.startswith("best.")}
    meta["best_val"] = math.inf if meta["best_val"] is None else meta["best_val"]
    return StageState(**meta), best


def fit_stage(run: Run, stage: str, parts: PriorParts, data: dict[str, TokenizedSplit], tracker) -> StageState:
    """The epochs of one stage (resumed from OUT/<stage>/state.safetensors with --resume), with early
    stopping; leaves `parts` at the best validation loss."""
    from tqdm.auto import tqdm

    from specdifftree.train.report import write_metrics_csv

    cfg, sdir = run.cfg, run.out / stage
    opt = torch.optim.AdamW(list(parts.encoder.parameters()) + list(parts.head.parameters()), lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    st, best = StageState(), _parts_tensors(parts, "best.")
    if run.resume and (sdir / STATE).is_file():
        st, best = _restore_state(sdir / STATE, parts, opt)
    write_metrics_csv(sdir / "metrics.csv", st.rows)
    steps = math.ceil(len(data["train"].examples) / cfg.batch_size)
    bar = tqdm(total=cfg.epochs * steps, initial=st.epoch * steps, disable=None if run.progress else True,
               file=sys.stderr)
    while not st.stopped and st.epoch < cfg.epochs:
        bar.set_description(f"{stage} epoch {st.epoch + 1}/{cfg.epochs}")
        train_loss = train_epoch(parts, opt, data["train"], cfg, st, stage, run.seed, cfg.epochs * steps, bar)
        ev = evaluate(parts, data["val"], cfg.batch_size)
        acc, recall = accuracy(data["val"], ev)
        st.epoch += 1
        row = {"epoch": st.epoch, "train_loss": train_loss, "val_loss": ev["nll"],
               "val_perplexity": math.exp(ev["nll"]), "val_accuracy": acc, "val_macro_recall": recall}
        st.rows.append(row)
        if ev["nll"] < st.best_val:
            st.best_val, st.best_epoch, st.bad_epochs = ev["nll"], st.epoch, 0
            best = _parts_tensors(parts, "best.")
        else:
            st.bad_epochs += 1
        st.stopped = st.bad_epochs >= cfg.patience
        _save_state(sdir / STATE, parts, best, opt, st)  # the epoch's commit point
        write_metrics_csv(sdir / "metrics.csv", st.rows)
        tracker.log(row, step=st.epoch)
        bar.set_postfix(loss=f"{train_loss:.4f}", val=f"{ev['nll']:.4f}")
    bar.close()
    _load_parts_tensors(parts, best, "best.")
    return st


def train_stage(run: Run, stage: str, parts: PriorParts, examples: dict[str, list[Example]]) -> dict:
    """Train one stage from `parts` (updated in place to the stage's best) on {split: examples} and
    write its files; returns its test summary."""
    from specdifftree.tracking import Tracker
    from specdifftree.train.report import plot_curves, write_index

    cfg, sdir = run.cfg, run.out / stage
    sdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data = {s: tokenize_split(examples[s], run.backbone) for s in SPLITS}
    cache_logits(run, data["train"], f"{stage} train")
    cache_logits(run, data["val"], f"{stage} val")
    with Tracker(sdir, name=f"{run.out.name}/{stage}", group=run.out.name, job_type="train-prior",
                 config={"stage": stage, "backbone": run.backbone_ref, "seed": run.seed, **cfg.to_dict()},
                 enabled=run.wandb) as tracker:
        st = fit_stage(run, stage, parts, data, tracker)
        _save_checkpoint_dir(parts, sdir / "checkpoints" / "best",
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

    cache_logits(run, test, f"{stage} test")
    ev = evaluate(parts, test, run.cfg.batch_size)
    ev0 = evaluate(parts, test, run.cfg.batch_size, zero_bias=True)
    summary = {"stage": stage, "n_test": len(test.examples), "test_tokens": ev["tokens"],
               "test_nll_prior": ev["nll"], "test_nll_backbone": ev0["nll"],
               "test_share_of_answers_better": float(np.mean(ev["example_nll"] < ev0["example_nll"])),
               "test_token_accuracy_prior": ev["token_accuracy"], "test_token_accuracy_backbone": ev0["token_accuracy"]}
    texts = decode_split(run, stage, test, ev["bias"])
    predictions = [{"prompt": ex.prompt(), "generated": t, "gold": ex.answer} for ex, t in zip(test.examples, texts)]
    if test.choices is not None:
        gold = [ex.label for ex in test.examples]
        chosen = test.choices.predicted(torch.from_numpy(ev["bias"]))
        from specdifftree.data.stages import parse_label

        parsed = [parse_label(stage, t, ex.options) for t, ex in zip(texts, test.examples)]
        m, m0 = label_metrics(gold, chosen), label_metrics(gold, test.choices.predicted(torch.from_numpy(ev0["bias"])))
        summary.update({"test_accuracy": m["accuracy"], "test_macro_recall": m["macro_recall"],
                        "test_accuracy_backbone": m0["accuracy"], "test_macro_recall_backbone": m0["macro_recall"],
                        **chance(gold, [ex.options for ex in test.examples]),
                        "test_accuracy_generated": label_metrics(gold, parsed)["accuracy"]})
        for p, ex, c, lab in zip(predictions, test.examples, chosen, parsed):
            p.update(label=ex.label, chosen_label=c, parsed_label=lab)
    lines = "".join(json.dumps(p) + "\n" for p in predictions)
    write_atomic(run.out / stage / "test_predictions.jsonl", lines.encode())
    return summary, predictions


# ------------------------------------------------------------------------------------------- curriculum


def _manifest(run: Run) -> dict:
    return {"format": 1, "backbone": run.backbone_ref, "preset": run.cfg.preset, "seed": run.seed,
            "config": run.cfg.to_dict(), "upstream": run.upstream, "final_checkpoint": None}


def _check_out(run: Run, stages: list[str]) -> dict:
    """The run's manifest: new, or the existing one when it describes the same run."""
    want = _manifest(run)
    have = read_manifest(run.out)
    if have is not None:
        same = all(have.get(k) == want[k] for k in ("backbone", "seed", "config"))
        if not same or bool(have.get("upstream")) != run.upstream:
            data = "upstream" if have.get("upstream") else "offline"
            raise SDTError(f"{run.out} holds a train-prior run with another backbone, seed, preset or data "
                           f"({have.get('backbone')}, seed {have.get('seed')}, preset {have.get('preset')}, "
                           f"{data} data); use another --out")
        want["final_checkpoint"] = have.get("final_checkpoint")
    if not run.resume:
        started = [s for s in stages if (run.out / s).is_dir() and any((run.out / s).iterdir())]
        if started:
            raise SDTError(f"{run.out / started[0]} already exists; pass --resume to continue that run, "
                           "or choose another --out")
    return want


def _starting_parts(run: Run, stage: str) -> PriorParts:
    """The previous stage's best checkpoint in this run, else fresh parts (stage 1, or a lone stage)."""
    i = STAGES.index(stage)
    prev = run.out / STAGES[i - 1] / "checkpoints" / "best" if i > 0 else None
    if prev is not None and (prev / "config.json").is_file():
        parts = PriorParts.load(prev)
        parts.backbone_ref = run.backbone_ref
        return parts
    if prev is not None:
        print(f"note: no {STAGES[i - 1]} checkpoint in {run.out}; {stage} starts from fresh parts", file=sys.stderr)
    return PriorParts.fresh(run.backbone.vocab_size, run.backbone_ref, seed=run.seed, encoder_config=run.cfg.encoder)


def train_prior(stages: list[str], cfg: TrainConfig, backbone_ref: str, out: Path, seed: int = 0,
                resume: bool = False, wandb: bool = True, data_dir: Optional[Path] = None,
                dataset_fn: Optional[DatasetFn] = None, progress: bool = True, upstream: bool = False,
                placement=None) -> dict:
    """Train `stages` in curriculum order into `out`; returns {stage: test summary} (also OUT/summary.json).
    upstream: stages 1-5 read the official OpenTSLM data (downloaded on first use) instead of the
    offline generators and shared data; stage 6 reads M4 and ETT either way. placement: where the frozen
    backbone runs (a `prior.backbones.base.Placement`; default auto); its logits are cached on the host."""
    from specdifftree.problem import absolute_spec, open_backbone

    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise SDTError(f"unknown stage '{unknown[0]}' (choose from all, {', '.join(STAGES)})")
    stages = sorted(set(stages), key=STAGES.index)
    out, backbone_ref = Path(out), absolute_spec(backbone_ref)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        run = Run(out, cfg, backbone_ref, None, seed, resume, wandb, Path(data_dir) if data_dir else None,
                  dataset_fn, progress, upstream)
        manifest = _check_out(run, stages)
        todo = [s for s in stages if not (out / s / "stage.json").is_file()]
        examples = {s: build_examples(run, s) for s in todo}  # bad data fails here, before any training
        run.backbone = open_backbone(backbone_ref, placement)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / MANIFEST, manifest)
        for stage in stages:
            if stage in examples:
                train_stage(run, stage, _starting_parts(run, stage), examples.pop(stage))
            manifest["final_checkpoint"] = f"{stage}/checkpoints/best"
            write_json(out / MANIFEST, manifest)
            write_json(out / "summary.json", collect_summary(out))
    finally:
        torch.set_num_threads(threads)
    return collect_summary(out)


def collect_summary(out: Path) -> dict:
    """{stage: its stage.json} for every finished stage of the run, in curriculum order."""
    import json

    return {s: json.loads((out / s / "stage.json").read_text()) for s in STAGES if (out / s / "stage.json").is_file()}

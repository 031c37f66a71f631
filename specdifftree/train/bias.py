"""The bias variant of the curriculum (`sdt train-prior`, the default): the prior's encoder and
logit-bias head trained over the frozen LLM's cached logits.

    v = BiasVariant(run)                      # what train/stage.py asks of a variant
    nll, owner, hits, bias = v.nll(parts, split, idx)       # per answer token [M]; biases [B, V]

Caching is exact: the backbone is frozen and the bias is additive and the same at every position,
so the teacher-forced backbone logits of every answer position are computed once per split
(`cache_logits`, `decode.answer_logits`) and every epoch then costs only the encoder and the head:
log p(answer_t) = log_softmax(llm_logits[t] + bias(series))[answer_t].

Several series in one example (e.g. three accelerometer axes): each series is encoded and
mean-pooled on its own, and the example's context vector is the mean of those pooled vectors
before the head (`context_bias`). This is invariant to the order of the series, and reduces
exactly to the single-series bias that `sdt search` computes (`PriorParts.bias`) for one series.

The soft-prompt variant, symmetric with this one, is train/soft_prompt.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from specdifftree.data.example import Example
from specdifftree.prior.model import PriorParts
from specdifftree.train.decode import answer_logits, decode_answers
from specdifftree.train.examples import TokenizedSplit, label_choices
from specdifftree.train.metrics import answer_nll, next_token_hits


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


def cache_logits(run, split: TokenizedSplit, what: str) -> None:
    """Teacher-forced backbone logits of the gold answers, and of every option's ending on label stages."""
    from specdifftree.progress import progress

    todo = (split.cached is None) + (split.labelled and split.choices is None)
    with progress(todo * len(split.examples), f"backbone logits ({what})", "examples",
                  enabled=run.progress and run.dist.is_main) as bar:  # each rank its share; rank 0 speaks
        if split.cached is None:
            split.cached = answer_logits(run.backbone, split.prompt_ids, split.answer_ids, run.cfg.backbone_batch,
                                         progress=bar.update)
        if split.labelled and split.choices is None:
            split.choices = label_choices(split, run.backbone, run.cfg.backbone_batch, progress=bar.update)



class BiasVariant:
    """Encoder + logit-bias head, trained over the frozen backbone's cached logits (the default)."""

    def __init__(self, run):
        """run: the stage loop's `stage.Run` (backbone, backbone_ref, cfg, seed)."""
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

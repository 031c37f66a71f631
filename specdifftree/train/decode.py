"""Everything the trainer asks of the frozen backbone, through the `Backbone` protocol only, so the
transformers and llama.cpp backends both work.

    cached = answer_logits(bb, prompt_ids, answer_ids)          # teacher forcing, once per split
    rows = branch_logits(bb, prompt_ids, stems, branches)       # one shared stem, several endings
    ids = greedy(bb, prompt_ids, bias, max_new, grammars)       # decoding with the bias (and grammar)
    texts = decode_answers(bb, split, bias, cfg, forecast)      # a split's test predictions

Why caching is exact: the backbone is frozen and the bias is additive and the same at every
position, so the trained prior's log-probs at the answer positions are

    log_softmax(llm_logits[t] + bias(c))

with `llm_logits[t]` independent of the trainable parts. They are computed once per example
(prefill the prompt, then advance along the gold answer) and reused by every epoch; an epoch
then costs only the encoder and the head. The cache holds float32 logits of every answer
position, [tokens, V]: cheap for the byte-level default backbone (V = 258), tokens * V * 4
bytes in general (reduce n_train for a 100k-token vocabulary).

Examples go through the backbone `batch` at a time: one `start` per prompt, then one batched
`advance` per position over the rows still running; a shared stem is run once and branched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from specdifftree.prior.backbones.base import Backbone, on_host


@dataclass
class AnswerLogits:
    """Backbone logits at every position of a set of token sequences (answers + EOS, or endings)."""

    logits: torch.Tensor  # [N, V] float32, N = total tokens
    targets: torch.Tensor  # [N] int64, the token each row predicts
    offsets: np.ndarray  # [n + 1] int64: sequence i owns rows offsets[i]:offsets[i + 1]

    @classmethod
    def from_rows(cls, rows: list[np.ndarray], seqs: list[list[int]], vocab_size: int) -> "AnswerLogits":
        """rows[i]: [len(seqs[i]), V] logits predicting seqs[i]."""
        lengths = [len(s) for s in seqs]
        return cls(torch.from_numpy(np.concatenate(rows)) if rows else torch.zeros(0, vocab_size),
                   torch.tensor([t for s in seqs for t in s], dtype=torch.long),
                   np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))

    def rows(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows of sequences idx -> (logits [M, V], targets [M], owner [M] = position in idx)."""
        spans = [np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx]
        rows = torch.from_numpy(np.concatenate(spans))
        owner = torch.from_numpy(np.repeat(np.arange(len(idx)), [len(s) for s in spans]))
        return self.logits[rows], self.targets[rows], owner


def _chunks(n: int, size: int):
    for lo in range(0, n, size):
        yield list(range(lo, min(n, lo + size)))


def _start(bb: Backbone, segments) -> tuple[int, np.ndarray]:
    """`bb.start` with the logits [V] on the host: decoding here works on numpy rows."""
    handle, logits = bb.start(segments)
    return handle, on_host(logits)


def _follow(bb: Backbone, handles: np.ndarray, first: np.ndarray, paths: list[list[int]],
            keep_last: bool = False) -> tuple[list[list[np.ndarray]], np.ndarray]:
    """Advance row r from handles[r] along the tokens paths[r], one batched `advance` per step.

    first: [R, V] logits at the handles. Returns (rows, final handles): rows[r] holds the logits
    before each token of paths[r] and after the last one, len(paths[r]) + 1 arrays [V]. Handles
    made here are released (the final ones too unless keep_last); the caller's are not.
    """
    handles = np.array(handles, dtype=np.int64)
    made = np.zeros(len(handles), dtype=bool)
    rows = [[lg] for lg in first]
    for t in range(max((len(p) for p in paths), default=0)):
        live = [r for r in range(len(paths)) if len(paths[r]) > t]
        kids, logits = bb.advance(handles[live], np.array([paths[r][t] for r in live], dtype=np.int64))
        logits = on_host(logits)
        bb.release(handles[live][made[live]])
        handles[live], made[live] = kids, True
        for r, lg in zip(live, logits):
            rows[r].append(lg)
    if not keep_last:
        bb.release(handles[made])
    return rows, handles


def branch_logits(bb: Backbone, prompt_ids: list[list[int]], stems: list[list[int]],
                  branches: list[list[list[int]]], batch: int = 64, progress=None) -> list[list[np.ndarray]]:
    """Teacher-forced logits of several endings of one stem per example, the stem run once.

    Example i: prefill prompt_ids[i], advance along stems[i], then along each ending in
    branches[i] (each non-empty; its last token, e.g. EOS, is predicted but never advanced).
    Returns, per example and ending, the logits predicting each token of the ending [len, V]
    float32. `progress(k)` is called as examples finish.
    """
    out: list[list[np.ndarray]] = []
    for idx in _chunks(len(prompt_ids), batch):
        starts = [_start(bb, prompt_ids[i]) for i in idx]
        roots = np.array([h for h, _ in starts], dtype=np.int64)
        stem_rows, ends = _follow(bb, roots, np.stack([lg for _, lg in starts]), [stems[i] for i in idx],
                                  keep_last=True)
        pairs = [(k, b) for k, i in enumerate(idx) for b in range(len(branches[i]))]
        rows, _ = _follow(bb, ends[[k for k, _ in pairs]], np.stack([stem_rows[k][-1] for k, _ in pairs]),
                          [branches[idx[k]][b][:-1] for k, b in pairs])
        bb.release(np.concatenate([ends, roots]))
        per_example: list[list[np.ndarray]] = [[] for _ in idx]
        for (k, _), r in zip(pairs, rows):
            per_example[k].append(np.stack(r).astype(np.float32))
        out += per_example
        if progress is not None:
            progress(len(idx))
    return out


def answer_logits(bb: Backbone, prompt_ids: list[list[int]], answer_ids: list[list[int]],
                  batch: int = 64, progress=None) -> AnswerLogits:
    """Teacher-forced backbone logits for each example's answer ids (EOS included, len >= 1):
    row j of example i holds the logits after prompt + answer[:j], those that predict answer[j]."""
    rows = branch_logits(bb, prompt_ids, [[] for _ in prompt_ids], [[a] for a in answer_ids], batch, progress)
    return AnswerLogits.from_rows([r[0] for r in rows], answer_ids, bb.vocab_size)


def greedy(bb: Backbone, prompt_ids: list[list[int]], bias: np.ndarray, max_new: int,
           grammars: Optional[list] = None, batch: int = 64, segments: Optional[list] = None) -> list[list[int]]:
    """Argmax decoding of llm_logits + bias[i] (+ grammar mask) for each prompt.

    bias: [n, V] float32. grammars: per prompt a `ForecastGrammar` (or None). Rows stop at EOS
    (not included in the returned ids) or after max_new tokens. segments: per prompt, token and
    embedding segments prefilled in place of prompt_ids (`Backbone.start`, soft prompts).
    """
    grammars = grammars or [None] * len(prompt_ids)
    out: list[list[int]] = []
    for idx in _chunks(len(prompt_ids), batch):
        starts = [_start(bb, prompt_ids[i] if segments is None else segments[i]) for i in idx]
        handles = np.array([h for h, _ in starts], dtype=np.int64)
        logits = np.stack([lg for _, lg in starts])
        gram = [grammars[i] for i in idx]
        states = [g.start if g is not None else None for g in gram]
        ids: list[list[int]] = [[] for _ in idx]
        live = list(range(len(idx)))
        while live:
            x = logits[live] + bias[[idx[k] for k in live]]
            for r, k in enumerate(live):
                if gram[k] is not None:
                    x[r] += gram[k].mask(states[k])
            going = []
            for k, tok in zip(live, x.argmax(-1).tolist()):
                if tok != bb.eos_id:
                    ids[k].append(tok)
                    if gram[k] is not None:
                        states[k] = gram[k].step(states[k], tok)
                    if len(ids[k]) < max_new:
                        going.append(k)
            if not going:
                break
            kids, step = bb.advance(handles[going], np.array([ids[k][-1] for k in going], dtype=np.int64))
            logits[going] = on_host(step)
            bb.release(handles[going])
            handles[going] = kids
            live = going
        bb.release(handles)
        out += ids
    return out


def decode_answers(bb: Backbone, split, bias: np.ndarray, cfg, forecast: bool,
                   segments: Optional[list] = None) -> list[str]:
    """Greedy answers (text) of a tokenized split (train.examples.TokenizedSplit) under the biases
    [n, V]; with `forecast`, under the forecast grammar (exactly as many numbers as the gold answer
    holds), as `sdt search` decodes. cfg: the TrainConfig (max_new_slack, backbone_batch).
    segments: per example, prefill segments in place of its prompt (the soft-prompt variant)."""
    max_new = max(len(a) for a in split.answer_ids) - 1 + cfg.max_new_slack
    grammars = None
    if forecast:
        from specdifftree.prior.constraint import ForecastGrammar

        strings, sep = bb.token_strings(), ","  # data.prompts.forecast_codec's separator
        grammars = [ForecastGrammar(strings, int(bb.eos_id), len(ex.answer.split(sep)), sep=sep)
                    for ex in split.examples]
        max_new = max(max_new, max(g.max_tokens() for g in grammars))
    ids = greedy(bb, split.prompt_ids, bias.astype(np.float32), max_new, grammars, cfg.backbone_batch,
                 segments=segments)
    return [bb.detokenize(t) for t in ids]

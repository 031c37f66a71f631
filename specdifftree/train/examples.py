"""A stage's examples as the trainer uses them: tokenised, checked, with the backbone's cached logits.

    split = tokenize_split(examples, backbone)
    split.cached = answer_logits(...)            # teacher-forced logits of answer + EOS
    split.choices = label_choices(split, backbone) # label stages: every option in place of the gold label

Label choices: for an example whose answer ends with its label ("... Answer: walking"), each
option o of the stage gives a candidate answer with o in the label's place (the rationale before
it unchanged). The candidates share their leading tokens, so the backbone runs that stem once and
branches into each ending (`decode.branch_logits`). The prior's choice is the option whose
ending is most probable under log_softmax(llm_logits + bias), i.e. argmax_o log p(o | prompt,
rationale): multiple-choice scoring by likelihood, as evaluation harnesses do. The stem's tokens
count the same for every option, so only the endings are scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from specdifftree.data.example import Example
from specdifftree.errors import SDTError
from specdifftree.train.decode import AnswerLogits, branch_logits


@dataclass
class Choices:
    """Cached backbone logits of every option's ending, for a split's labelled examples."""

    endings: AnswerLogits  # one sequence per (example, option) pair
    example: torch.Tensor  # [P] example index of each pair
    option: torch.Tensor  # [P] option index of each pair
    gold: np.ndarray  # [n] index of the gold label among the example's options (-1: not rankable)
    options: list[tuple[str, ...]]  # per example

    def scores(self, bias: torch.Tensor) -> torch.Tensor:
        """log p(ending) of each option under log_softmax(logits + bias[example]).  bias [n, V] -> [n, K]
        (-inf where an example has fewer options or cannot be ranked)."""
        from specdifftree.train.metrics import answer_nll

        logits, targets, pair = self.endings.rows(range(len(self.example)))
        nll = answer_nll(logits, targets, bias, self.example[pair])
        per_pair = torch.zeros(len(self.example), dtype=nll.dtype).index_add(0, pair, nll)
        k = max((len(o) for o in self.options), default=0)
        out = torch.full((len(self.options), k), -torch.inf, dtype=nll.dtype)
        out[self.example, self.option] = -per_pair
        return out

    def predicted(self, bias: torch.Tensor) -> list[Optional[str]]:
        """The most probable option per example (None where the example cannot be ranked)."""
        best = self.scores(bias).argmax(-1).tolist()
        return [o[b] if g >= 0 else None for o, b, g in zip(self.options, best, self.gold)]


@dataclass
class TokenizedSplit:
    examples: list[Example]
    prompt_ids: list[list[int]]
    answer_ids: list[list[int]]  # answer + EOS
    cached: Optional[AnswerLogits] = None
    choices: Optional[Choices] = None
    layout: Optional[object] = None  # the soft-prompt variant's tokenized segments (train/soft_prompt.Layout)

    @property
    def labelled(self) -> bool:
        return any(e.label is not None for e in self.examples)


def _where(ex: Example) -> str:
    keys = ("source", "file", "path", "row", "window", "index", "record")
    found = [f"{k} {ex.meta[k]}" for k in keys if k in ex.meta]
    return ", ".join(found) if found else "a generated example"


def check_examples(examples: list[Example], stage: str, split: str, patch: int, max_len: int) -> None:
    """One-line SDTError for an example the encoder cannot take, naming where it came from."""
    if not examples:
        raise SDTError(f"{stage}: the {split} split is empty")
    for i, ex in enumerate(examples):
        what = f"{stage} {split} example {i} ({_where(ex)})"
        if not ex.series or len(ex.series) != len(ex.names):
            raise SDTError(f"{what}: needs at least one series and one name per series")
        for j, x in enumerate(ex.series):
            x = np.asarray(x, dtype=np.float64)
            if x.ndim != 1 or len(x) < patch:
                raise SDTError(f"{what}: series {j} has {x.size} points, fewer than one encoder patch ({patch})")
            if len(x) > max_len:
                raise SDTError(f"{what}: series {j} has {len(x)} points, more than the encoder takes ({max_len})")
            if not np.all(np.isfinite(x)):
                k = int(np.flatnonzero(~np.isfinite(x))[0])
                raise SDTError(f"{what}: series {j} has the value {x[k]} at index {k}")


def tokenize_split(examples: list[Example], bb) -> TokenizedSplit:
    return TokenizedSplit(examples, [bb.tokenize(e.prompt()) for e in examples],
                 [bb.tokenize(e.answer) + [int(bb.eos_id)] for e in examples])


def candidates(ex: Example) -> Optional[list[str]]:
    """The answer with each option in place of the gold label (None: the answer does not hold it)."""
    pos = ex.answer.rfind(ex.label) if ex.label else -1
    if pos < 0 or ex.label not in ex.options:
        return None
    return [ex.answer[:pos] + o + ex.answer[pos + len(ex.label):] for o in ex.options]


def label_choices(split: TokenizedSplit, bb, batch: int = 64, progress=None) -> Choices:
    """Cache the backbone logits of every option's ending (see the module docstring)."""
    stems, branches, gold, pairs = [], [], [], []
    for i, ex in enumerate(split.examples):
        cands = candidates(ex)
        if cands is None:
            stems.append([])
            branches.append([])
            gold.append(-1)
            continue
        ids = [bb.tokenize(c) + [int(bb.eos_id)] for c in cands]
        lcp = 0
        while all(lcp < len(s) - 1 and s[lcp] == ids[0][lcp] for s in ids):
            lcp += 1
        stems.append(ids[0][:lcp])
        branches.append([s[lcp:] for s in ids])
        gold.append(ex.options.index(ex.label))
        pairs += [(i, k) for k in range(len(ids))]
    keep = [i for i, b in enumerate(branches) if b]
    rows = branch_logits(bb, [split.prompt_ids[i] for i in keep], [stems[i] for i in keep],
                         [branches[i] for i in keep], batch, progress)
    endings = [b for i in keep for b in branches[i]]
    return Choices(AnswerLogits.from_rows([r for per in rows for r in per], endings, bb.vocab_size),
                   torch.tensor([i for i, _ in pairs], dtype=torch.long),
                   torch.tensor([k for _, k in pairs], dtype=torch.long),
                   np.array(gold, dtype=np.int64), [tuple(e.options) for e in split.examples])

"""The numbers the trainer reports.

    nll = answer_nll(logits, targets, bias, owner)   # per answer token, under log_softmax(llm + bias)
    label_metrics(gold, predicted)                   # accuracy and macro recall of parsed labels
    significance(gold, chosen, chosen0, 1 / 3)       # p-values: against chance, prior against backbone alone

Loss and perplexity are per answer token (EOS included), averaged over all tokens of a split.
Accuracy on stages whose examples carry labels: the share of examples where the prior's choice
among the options (likelihood ranking, `train/examples.py`) is the gold label; macro recall is
the mean over gold classes of the share of that class chosen correctly. Labels parsed from
greedy text (`data.stages.parse_label`; an answer with no parsable label counts as wrong) are
reported on the test split as well. Stages without labels report next-token accuracy
(teacher-forced argmax over the answer tokens) and no macro recall. Stages whose examples carry
caption facts (stage 2: `meta["facts"]`) also report per-level fact accuracy of the greedy text,
trained prior and backbone alone (`fact_accuracy`; the score is defined in data/captions/score.py).
"""

from __future__ import annotations

from collections import Counter
from typing import Optional, Sequence

import torch


def answer_nll(logits: torch.Tensor, targets: torch.Tensor, bias: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """-log p(target) under log_softmax(logits + bias[owner]).

    logits [M, V], targets [M] int64, bias [B, V], owner [M] in [0, B) -> [M]
    """
    logp = torch.log_softmax(logits + bias[owner], dim=-1)
    return -logp.gather(1, targets[:, None])[:, 0]


def next_token_hits(logits: torch.Tensor, targets: torch.Tensor, bias: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """Whether argmax(logits + bias[owner]) is the target.  -> [M] bool"""
    return (logits + bias[owner]).argmax(-1) == targets


def label_metrics(gold: Sequence[str], predicted: Sequence[Optional[str]]) -> dict:
    """{"accuracy", "macro_recall", "n"} of predicted labels (None = unparsable) against gold ones."""
    n = len(gold)
    if n == 0:
        return {"accuracy": float("nan"), "macro_recall": float("nan"), "n": 0}
    hits = [p == g for g, p in zip(gold, predicted)]
    per_class = {c: sum(h for g, h in zip(gold, hits) if g == c) / k for c, k in Counter(gold).items()}
    return {"accuracy": sum(hits) / n, "macro_recall": sum(per_class.values()) / len(per_class), "n": n}


def chance(gold: Sequence[str], options_per_example: Sequence[Sequence[str]]) -> dict:
    """Baselines for label accuracy: uniform guessing among each example's options, and always
    answering the most frequent gold label of the split."""
    uniform = [1.0 / len(o) for o in options_per_example if len(o)]
    top = Counter(gold).most_common(1)
    return {"chance_uniform": sum(uniform) / len(uniform) if uniform else float("nan"),
            "chance_majority": top[0][1] / len(gold) if top else float("nan")}


def significance(gold: Sequence[str], chosen: Sequence[Optional[str]], chosen0: Sequence[Optional[str]],
                 chance_uniform: float) -> dict:
    """One-sided exact binomial tests (scipy.stats.binomtest) of label choices: the prior's hits
    against uniform chance ("p_chance"; exact where every example has the same number of options),
    the backbone alone's likewise ("p_chance_backbone"), and the prior against the backbone alone on
    the examples where exactly one of them is right (a sign test, McNemar's exact form: "p_vs_backbone",
    with "prior_only" and "backbone_only" the counts of those examples)."""
    from scipy.stats import binomtest

    hit = [c == g for g, c in zip(gold, chosen)]
    hit0 = [c == g for g, c in zip(gold, chosen0)]
    only, only0 = sum(a and not b for a, b in zip(hit, hit0)), sum(b and not a for a, b in zip(hit, hit0))
    n = len(gold)
    if n == 0 or not 0 < chance_uniform < 1:
        return {}
    return {"p_chance": binomtest(sum(hit), n, chance_uniform, alternative="greater").pvalue,
            "p_chance_backbone": binomtest(sum(hit0), n, chance_uniform, alternative="greater").pvalue,
            "p_vs_backbone": binomtest(only, only + only0, 0.5, alternative="greater").pvalue if only + only0 else 1.0,
            "prior_only": only, "backbone_only": only0}


def fact_accuracy(facts: Sequence[Sequence[dict]], texts: Sequence[str]) -> tuple[dict, list[dict]]:
    """Per-level fact accuracy of generated captions against each example's reference facts
    (`data.captions.score_caption`): ({level: mean over the examples whose reference states that
    level, f"n_{level}": how many}, [per-example {level: score or None}])."""
    from specdifftree.data.captions import LEVELS, Fact, score_caption

    scores = [score_caption(t, [Fact.from_dict(f) for f in ref]) for ref, t in zip(facts, texts)]
    summary: dict = {}
    for level in LEVELS:
        got = [s[level] for s in scores if s[level] is not None]
        if got:
            summary[level] = sum(got) / len(got)
            summary[f"n_{level}"] = len(got)
    return summary, scores

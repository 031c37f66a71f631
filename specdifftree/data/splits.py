"""Which part of each real dataset trains what. One place, so that evaluation windows stay
disjoint from everything the prior and the flow network were trained on.

ETT (hourly, 17,420 rows): the Informer split by time, 60% / 20% / 20%.
    [0, 0.6)   prior: backbone pretraining and the curriculum (stage 6 included)
    [0.6, 0.8) the curriculum's validation windows ("flow"), split for S-ADT into
      [0.6, 0.75) flow network training contexts ("flow-train")
      [0.75, 0.8) validation windows for tuning S-ADT's options ("val"), never trained on
    [0.8, 1.0) evaluation windows only (experiments, S-ADT.md)
M4 Hourly (414 series): split by series. Series whose 0-based row index i has i % 5 == 4 are
held out for evaluation (their official test rows are the ground truth); the others train
(flow training contexts are taken from the first of them, validation windows from the last).
"""

from __future__ import annotations

from typing import Literal

Part = Literal["prior", "flow", "flow-train", "val", "eval"]
ETT_FRACTIONS: dict[str, tuple[float, float]] = {"prior": (0.0, 0.6), "flow": (0.6, 0.8), "flow-train": (0.6, 0.75),
                                                 "val": (0.75, 0.8), "eval": (0.8, 1.0)}
M4_EVAL_MOD = 5


def ett_range(n_rows: int, part: Part) -> tuple[int, int]:
    """[start, stop) row indices of `part` in an ETT file of n_rows rows."""
    lo, hi = ETT_FRACTIONS[part]
    return int(n_rows * lo), int(n_rows * hi)


def m4_is_eval(row_index: int) -> bool:
    """True for the M4 series held out for evaluation (0-based row index in Hourly-train.csv)."""
    return row_index % M4_EVAL_MOD == M4_EVAL_MOD - 1

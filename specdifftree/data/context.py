"""The query context: what a prior is conditioned on and what a reward may read besides the text."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np


@dataclass
class Context:
    """Everything a reward may need about the query besides the generated text.

    series:  [L] the history the forecast continues (None for non-forecast tasks).
    horizon: how many values the forecast should hold (None: any number).
    codec:   how numbers are written as text (None: plain decimals; see data/codec.py).
    target:  [H] the true continuation, for evaluation metrics only, never for search rewards.
    meta:    anything else (dataset, window index, prompt, ...).
    """

    series: Optional[np.ndarray] = None
    horizon: Optional[int] = None
    codec: Any = None
    target: Optional[np.ndarray] = None
    meta: dict = field(default_factory=dict)

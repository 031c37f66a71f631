"""Task terms on forecast text: format, length, smoothness, bounds.

All of them read the text with `context.codec` (default NumberCodec()) and never raise on model
text; a context they cannot work with (no series, no horizon where one is needed) is a
configuration error (SDTError). Definitions, with n = values parsed from the whole text,
b = bad fields, H = context.horizon, and the forecast = the first H values:

    format:     (a caption or qa context: 0 when the text is a whole answer of its grammar, else -1)
                0 when b == 0 and n == H (n >= 1 when H is None),
                else -(b + |n - H|) / max(H, 1); with H None, -(b + [n == 0]).
                A text ending in a separator is not penalised.
    length:     -|n - H| / H (needs H).
    smoothness: -mean((second difference of forecast / std(series))**2); std 0 counts as 1;
                `invalid` when fewer than 3 values parse.
    bounds:     -(fraction of forecast values outside [min - m*range, max + m*range] of the
                series), m = 0.5; `invalid` (default -1, all out) when no value parses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from specdifftree.data.codec import Parsed, codec_for
from specdifftree.data.context import Context
from specdifftree.rewards.base import finite_or, forecast_values, need_horizon, need_series

# ------------------------------------------------------------------ rewards


@dataclass
class FormatReward:
    """0 for a well-formed forecast, minus the share of wrong fields otherwise."""

    name: ClassVar[str] = "format"

    def __call__(self, text: str, context: Context) -> float:
        if context.task is not None:  # a caption or an answer: its task's grammar (rewards/text.py)
            from specdifftree.rewards.text import text_format

            return text_format(text, context)
        p: Parsed = codec_for(context).decode(text)
        h = context.horizon
        missing = int(p.n_values == 0) if h is None else abs(p.n_values - h)
        return -(p.n_bad + missing) / max(h or 1, 1)


@dataclass
class LengthReward:
    """-|n_values - H| / H."""

    name: ClassVar[str] = "length"

    def __call__(self, text: str, context: Context) -> float:
        h = need_horizon(context, self.name)
        return -abs(codec_for(context).decode(text).n_values - h) / h


@dataclass
class SmoothnessReward:
    """Minus the mean squared second difference of the forecast in units of the series' std."""

    name: ClassVar[str] = "smoothness"
    invalid: float = -10.0

    def __call__(self, text: str, context: Context) -> float:
        std = float(np.std(need_series(context, self.name)))
        values = forecast_values(text, context)
        if len(values) < 3:
            return self.invalid
        with np.errstate(all="ignore"):
            r = -np.mean(np.diff(values / (std if std > 0 else 1.0), n=2) ** 2)
        return finite_or(r, self.invalid)


@dataclass
class BoundsReward:
    """Minus the fraction of forecast values outside the widened range of the series."""

    name: ClassVar[str] = "bounds"
    margin: float = 0.5
    invalid: float = -1.0

    def __call__(self, text: str, context: Context) -> float:
        series = need_series(context, self.name)
        values = forecast_values(text, context)
        if len(values) == 0:
            return self.invalid
        lo, hi = float(series.min()), float(series.max())
        pad = self.margin * (hi - lo)
        return -float(np.mean((values < lo - pad) | (values > hi + pad)))

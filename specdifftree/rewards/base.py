"""What a reward sees: `fn(text, context) -> float`, with the context of the query."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from specdifftree.data.context import Context
from specdifftree.errors import SDTError

RewardFn = Callable[[str, Context], float]



# ------------------------------------------------------------------ helpers shared by the rewards


def forecast_values(text: str, context: Context) -> np.ndarray:
    """The forecast in `text`: the first `context.horizon` values it parses to.  -> [<= H]"""
    from specdifftree.data.codec import codec_for

    return codec_for(context).values_for(text, context.horizon)


def need_series(context: Context, reward: str, min_len: int = 1) -> np.ndarray:
    """The context series [L] as float64; SDTError when it is missing, too short or not finite."""
    if context.series is None:
        raise SDTError(f"the {reward} reward needs a context series (--series)")
    series = np.asarray(context.series, dtype=np.float64).ravel()
    if len(series) < min_len or not np.all(np.isfinite(series)):
        raise SDTError(f"the {reward} reward needs a context series of at least {min_len} finite values")
    return series


def need_horizon(context: Context, reward: str) -> int:
    """The forecast horizon H >= 1; SDTError when it is not set."""
    if context.horizon is None or context.horizon < 1:
        raise SDTError(f"the {reward} reward needs a forecast horizon >= 1 (--horizon)")
    return int(context.horizon)


def finite_or(value: float, fallback: float) -> float:
    """`value` as a float, or `fallback` when it is NaN or infinite."""
    value = float(value)
    return value if math.isfinite(value) else float(fallback)

"""How a cell's search is sized to its budget (the rules are in experiments/runner.py's docstring) and
seeded per window."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

UNBOUNDED = 10**9


def sized_config(cfg, cell, prior, context):
    """The cell's SearchConfig (cfg: ExperimentConfig, cell: runner.Cell): experiment defaults, then
    the budget sizing rules (runner.py's docstring), then the method's own options. Validated."""
    from specdifftree.search.common import SearchConfig
    from specdifftree.search.registry import METHODS

    base = replace(SearchConfig(**cfg.search), **cell.method.params)
    T = answer_tokens(prior, context)
    P = int(prior.describe().get("prompt_tokens", 0)) + int(prior.describe().get("soft_prompt_tokens", 0))
    room = max(cell.cap - P, T)
    fits = max(1, room // T)
    tree_batch = int(np.clip(room // (4 * T), 1, base.batch_size))  # a round: about a quarter of the cap
    name = cell.method.method
    sized = {"budget": cell.cap, "season": cell.dataset.season}
    if name == "best-of-n":
        sized["n"] = fits
    elif name == "beam":
        sized["beam_width"] = fits
    elif name == "smc":
        sized["particles"] = min(fits, base.particles)
    elif name == "sadt" and base.rollout == "flow":
        sized.update(iterations=UNBOUNDED, budget=max(P + 1, cell.cap - base.samples * T))
    elif name == "sadt":
        batch = int(cell.method.params.get("batch_size", tree_batch))
        sized.update(iterations=UNBOUNDED, batch_size=batch, budget=max(P + 1, cell.cap - batch * T))
    elif METHODS[name].tree:
        sized.update(iterations=UNBOUNDED, batch_size=tree_batch)
    own = {k: v for k, v in cell.method.params.items() if k in sized}
    return replace(base, **{**sized, **own}, seed=cell.seed).validate()


def answer_tokens(prior, context) -> int:
    """Typical answer length T in tokens: the history's last H values written with the codec, plus
    EOS (one token per character at most), capped at the prior's max_len; max_len without a series."""
    if context.series is None or not context.horizon or context.codec is None:
        return int(prior.max_len)
    from specdifftree.data.prompts import forecast_answer

    tail = context.series[-context.horizon:]
    chars = len(forecast_answer(tail, context.codec)) * context.horizon / len(tail) + 1
    return int(max(1, min(math.ceil(chars), prior.max_len)))


def window_seed(seed: int, window: int) -> int:
    """The search seed of window `window` in a cell of seed `seed` (distinct streams per window)."""
    return int(np.random.SeedSequence([seed, window]).generate_state(1)[0])

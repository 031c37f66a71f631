"""An example reward plugin: `sdt search --reward examples/reward.py:count_c ...`.

A reward is any function `fn(text, context) -> float`; `context` carries the series, horizon
and codec when the search has them (see specdifftree/rewards/base.py).
"""


def count_c(text: str, context) -> float:
    """+1 per 'c', -0.5 per 'a' (the reward of the built-in toy3 problem)."""
    return text.count("c") - 0.5 * text.count("a")

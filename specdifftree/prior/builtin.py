"""Built-in enumerable problems: a Markov prior small enough that pi* can be enumerated, a reward
that pulls pi* far from the prior, and lambda. Usable anywhere a prior is named (`--prior markov:toy3`);
`sdt bench exactness` measures every search method against them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from specdifftree.data.context import Context
from specdifftree.prior.markov import MarkovPrior


@dataclass
class BuiltinProblem:
    """An enumerable problem: a Markov prior, a reward that pulls pi* far from it, and lambda.
    Usable anywhere a prior is named: `--prior markov:toy3`."""

    name: str
    prior: MarkovPrior
    reward: Callable[[str, Context], float]
    lam: float
    about: str


def count_c_reward(text: str, context: Context) -> float:
    """+1 per 'c', -0.5 per 'a': pulls towards c-rich text the prior finds unlikely."""
    return text.count("c") - 0.5 * text.count("a")


def _toy3() -> BuiltinProblem:
    # 3 tokens + EOS, max_len 4: 121 sequences. The prior prefers 'a' and sticky chains.
    prior = MarkovPrior.from_dict(
        {
            "vocab": ["a", "b", "c", "<eos>"],
            "eos": 3,
            "max_len": 4,
            "initial": [0.6, 0.25, 0.1, 0.05],
            "transition": [
                [0.55, 0.2, 0.05, 0.2],
                [0.3, 0.4, 0.1, 0.2],
                [0.2, 0.2, 0.3, 0.3],
                [0.25, 0.25, 0.25, 0.25],
            ],
        },
        name="toy3",
    )
    return BuiltinProblem("toy3", prior, count_c_reward, 1.0, "3 tokens + EOS, max_len 4, reward #c - 0.5 #a")


def _deep2() -> BuiltinProblem:
    # 2 tokens + EOS, max_len 8: 511 sequences, a longer horizon with rare rewarded tails.
    prior = MarkovPrior.from_dict(
        {
            "vocab": ["a", "c", "<eos>"],
            "eos": 2,
            "max_len": 8,
            "initial": [0.8, 0.15, 0.05],
            "transition": [[0.8, 0.1, 0.1], [0.5, 0.4, 0.1], [0.5, 0.25, 0.25]],
        },
        name="deep2",
    )
    return BuiltinProblem("deep2", prior, count_c_reward, 1.0, "2 tokens + EOS, max_len 8, reward #c - 0.5 #a")


BUILTIN_PROBLEMS: dict[str, Callable[[], BuiltinProblem]] = {"toy3": _toy3, "deep2": _deep2}


__all__ = ["BUILTIN_PROBLEMS", "BuiltinProblem", "count_c_reward"]

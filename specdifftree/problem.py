"""Queries: a prior, a reward and lambda, parsed and loaded once; a Problem for each context.

    queries = Queries.open("default", ["spectral"])     # prior + reward + lambda, parsed once
    problem = queries.problem(context)                  # one Problem per context, one backbone for all

A built-in enumerable problem (`markov:toy3`, ...) brings its own reward and lambda. Prior specs
are parsed in prior/spec.py and opened in prior/sources.py; contexts are made in data/context.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from specdifftree.data.context import Context
from specdifftree import validate
from specdifftree.prior.backbones.base import Placement
from specdifftree.prior.sources import PriorSource, open_prior
from specdifftree.prior.spec import PriorSpec
from specdifftree.rewards.base import RewardFn
from specdifftree.search.common import Problem


@dataclass
class Queries:
    """A prior, a reward and lambda, parsed and loaded once; `problem(context)` for each context."""

    source: PriorSource
    reward: RewardFn
    lam: float
    rewards: tuple[str, ...] = ()  # the reward specs as given (empty: a built-in problem's own)

    @classmethod
    def open(cls, prior: str | PriorSource, rewards: list[str] | tuple[str, ...] = (),
             lam: Optional[float] = None, backbone: Optional[str] = None,
             placement: Optional[Placement] = None) -> "Queries":
        """lam None: the built-in problem's lambda, else 1.0. backbone: --backbone (see PriorSpec).
        placement: the model's device and dtype (when `prior` is a spec; default auto)."""
        prior = os.fspath(prior) if isinstance(prior, os.PathLike) else prior
        if isinstance(prior, (str, PriorSpec)):  # the spec, its files and the reward checked before the model loads
            spec = validate.prior_spec(prior, backbone)
            reward = validate.reward_specs(spec, rewards)
            source = open_prior(spec, placement)
        else:
            reward = validate.reward_specs(prior.spec, rewards)
            source = prior
        builtin = source.builtin
        reward = reward if reward is not None else builtin.reward
        lam = lam if lam is not None else (builtin.lam if builtin is not None else 1.0)
        return cls(source, reward, float(lam), tuple(rewards))

    def problem(self, context: Optional[Context] = None) -> Problem:
        context = context or Context()
        return Problem(self.source.prior_for(context), self.reward, context)


def build_problem(prior: str, rewards: list[str], context: Context,
                  backbone: Optional[str] = None, placement: Optional[Placement] = None) -> tuple[Problem, Optional[float]]:
    """One problem, and the lambda a built-in problem suggests (None otherwise)."""
    queries = Queries.open(prior, rewards, backbone=backbone, placement=placement)
    return queries.problem(context), (queries.source.builtin.lam if queries.source.builtin else None)


__all__ = ["Queries", "build_problem"]

"""Types and helpers every search method shares: the problem, the config, results, logsumexp."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from specdifftree.errors import SDTError
from specdifftree.prior.base import Prior
from specdifftree.data.context import Context
from specdifftree.rewards.base import RewardFn


@dataclass
class SearchConfig:
    """Options of all search methods; each method reads the fields it needs."""

    # shared
    samples: int = 16  # sequences returned
    lam: float = 1.0  # inverse temperature of pi* ~ p exp(lam r)
    budget: Optional[int] = None  # cap on forward tokens (None: no cap)
    seed: int = 0
    # tree search (dts, dts-star, mcts)
    iterations: int = 1000
    batch_size: int = 16  # leaves selected per round; their rollouts run as one batch
    widen_c: float = 2.0  # progressive widening: a node may hold C * N^alpha draws
    widen_alpha: float = 0.7
    c_uct: float = 1.0  # exploration constant of dts-star and mcts
    child_weight: str = "prior"  # "prior": w = p(a|s) over explored children; "count": draw multiplicity
    # ancestral sampling (sample, best-of-n, rollouts of baselines)
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    n: int = 64  # best-of-n candidates (grows to fill --budget when given)
    # beam
    beam_width: int = 8
    # smc
    particles: int = 64
    ess_threshold: float = 0.5  # resample when ESS < threshold * particles
    potential: str = "partial"  # "partial": reward of the partial decode where defined; "none"; "flow": F_phi
    # S-ADT (sadt, sadt-sample, smc --potential flow)
    flow: Optional[str] = None  # flow network directory written by `sdt amortize`
    alpha: float = 0.5  # sadt selection: softmax(lam ((1 - alpha) v_hat + alpha F_phi))
    rollout: str = "q"  # sadt, new nodes: "q" = roll out with q to a terminal; "flow" = value F_phi, no rollout
    # reference forecasters (naive, seasonal-naive, stats:*)
    season: Optional[int] = None  # seasonal period of the series (e.g. 24 for hourly data); None: no season

    def validate(self) -> "SearchConfig":
        checks = [
            (self.samples >= 1, "--samples must be >= 1"),
            (math.isfinite(self.lam) and self.lam > 0, "--lambda must be a positive number"),
            (self.budget is None or self.budget >= 1, "--budget must be >= 1"),
            (self.iterations >= 1, "--iterations must be >= 1"),
            (self.batch_size >= 1, "--batch-size must be >= 1"),
            (self.widen_c > 0 and 0 <= self.widen_alpha <= 1, "widening needs C > 0 and 0 <= alpha <= 1"),
            (self.child_weight in ("prior", "count"), "--child-weight must be 'prior' or 'count'"),
            (self.temperature > 0, "--temperature must be > 0"),
            (self.top_k >= 0, "--top-k must be >= 0"),
            (0 < self.top_p <= 1, "--top-p must be in (0, 1]"),
            (self.n >= 1 and self.beam_width >= 1 and self.particles >= 1, "counts must be >= 1"),
            (0 <= self.ess_threshold <= 1, "--ess-threshold must be in [0, 1]"),
            (self.potential in ("partial", "none", "flow"), "--potential must be 'partial', 'none' or 'flow'"),
            (0 <= self.alpha <= 1, "--alpha must be in [0, 1]"),
            (self.rollout in ("flow", "q"), "--rollout must be 'flow' or 'q'"),
            (self.season is None or self.season >= 1, "--season must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise SDTError(msg)
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Problem:
    """A prior, a reward on its decoded text, and the context both refer to.

    `score` caches by token tuple: a complete sequence's reward is computed once.
    """

    prior: Prior
    reward: RewardFn
    context: Context = field(default_factory=Context)
    _cache: dict = field(default_factory=dict, repr=False)

    def score(self, tokens) -> float:
        """Reward of a complete sequence (tokens without EOS)."""
        key = tuple(int(t) for t in tokens)
        if key not in self._cache:
            self._cache[key] = self.score_text(self.prior.decode(key))
        return self._cache[key]

    def score_text(self, text: str) -> float:
        """Reward of a complete text (not cached): what `score` computes after decoding."""
        r = float(self.reward(text, self.context))
        if math.isnan(r):
            raise SDTError(f"the reward returned NaN for the text {text[:60]!r}; a reward must return a number")
        return r

    def potential(self, tokens) -> float:
        """Reward of a partial decode where the reward defines one, else 0 (SMC twist).

        In a forecast (the context has a codec, a horizon and a history) the reward sees the
        partial forecast completed to the horizon (`completed_forecast`): its finished numbers,
        the last one repeated. Read raw, a partial forecast favours short, truncated numbers:
        "401,401,401,4" holds a 4 where the model is writing 401 (a drop to a hundredth of the
        level, which the spectral reward scores as power the flat start lacks), and a particle
        writing two-digit numbers reaches the reward's minimum count of values sooner than one
        writing the level's three digits, so at equal length it looks better.
        """
        text = self.prior.decode(tokens)
        if self.context.codec is not None and self.context.horizon and self.context.series is not None:
            text = completed_forecast(text, self.context)
        try:
            r = float(self.reward(text, self.context))
        except Exception:  # noqa: BLE001 - a reward need not accept partial text
            return 0.0
        return r if math.isfinite(r) else 0.0

    def spent(self) -> int:
        """Forward tokens spent on this problem so far (its prior's meter is its own)."""
        return self.prior.cost.forward_tokens

    def exhausted(self, budget: Optional[int]) -> bool:
        """Whether a cap of `budget` forward tokens (None: no cap) is spent."""
        return budget is not None and self.spent() >= budget


def completed_forecast(text: str, context: Context) -> str:
    """A partial forecast as a whole one: the numbers `text` has finished (up to its last
    separator), then the last of them repeated (the history's last value when there is none) up
    to `context.horizon` values, written with the context's codec."""
    codec = context.codec
    done = codec.decode(codec.finished(text)).values[:context.horizon]
    fill = done[-1] if len(done) else float(np.asarray(context.series)[-1])
    return codec.encode(np.concatenate([done, np.full(context.horizon - len(done), fill)]))


@dataclass
class Sample:
    tokens: list[int]  # without EOS
    text: str
    reward: float
    logp: float = float("nan")  # log p(x | c) under the prior, where the method knows it

    def to_dict(self) -> dict:
        d = {"tokens": [int(t) for t in self.tokens], "text": self.text, "reward": float(self.reward)}
        if math.isfinite(self.logp):
            d["logp"] = float(self.logp)
        return d


@dataclass
class SearchResult:
    method: str
    samples: list[Sample]
    forward_tokens: int
    model_calls: int
    wall_s: float
    tree_nodes: int = 0
    tree: object = None  # search.tree.Tree, for --save-tree
    host_kv_bytes: int = 0  # the prior's on-demand KV storage on the host at the end (Prior.host_kv_bytes)
    row_pool_bytes: int = 0  # the tree's next-token row pool at the end (search.rows, bounded)

    def stats(self) -> dict:
        return {
            "forward_tokens": int(self.forward_tokens),
            "model_calls": int(self.model_calls),
            "wall_s": float(self.wall_s),
            "tree_nodes": int(self.tree_nodes),
            "host_kv_bytes": int(self.host_kv_bytes),
            "row_pool_bytes": int(self.row_pool_bytes),
        }

    def to_dict(self) -> dict:
        return {"method": self.method, "samples": [s.to_dict() for s in self.samples], "stats": self.stats()}


class Stopwatch:
    """Cost and wall time of one method run, measured from construction."""

    def __init__(self, problem: Problem):
        self.problem = problem
        self.t0 = time.perf_counter()
        self.c0 = (problem.prior.cost.forward_tokens, problem.prior.cost.model_calls)

    def result(self, method: str, samples: list[Sample], tree=None) -> SearchResult:
        cost = self.problem.prior.cost
        return SearchResult(
            method=method,
            samples=samples,
            forward_tokens=cost.forward_tokens - self.c0[0],
            model_calls=cost.model_calls - self.c0[1],
            wall_s=time.perf_counter() - self.t0,
            tree_nodes=0 if tree is None else tree.size,
            tree=tree,
            host_kv_bytes=self.problem.prior.host_kv_bytes(),
            row_pool_bytes=0 if tree is None else tree.rows.nbytes,
        )


def make_sample(problem: Problem, tokens, logp: float = float("nan")) -> Sample:
    tokens = [int(t) for t in tokens]
    return Sample(tokens, problem.prior.decode(tokens), problem.score(tokens), logp)


# ------------------------------------------------------------------ maths


def logsumexp(x: np.ndarray, axis=None, keepdims: bool = False) -> np.ndarray:
    """log(sum(exp(x))) without overflow; -inf where every entry is -inf."""
    x = np.asarray(x, dtype=np.float64)
    if axis is None and not keepdims:  # the hot path of tree backups: small 1-D arrays, scalar out
        m = x.max()
        return m + math.log(np.exp(x - m).sum()) if m > -np.inf else -np.inf
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)

"""Baselines (greedy, sample, best-of-n, best-of-n-is, beam, smc, mcts) on enumerable problems.

TV thresholds were measured over seeds 0-9 on toy3 (where TV(prior, pi*) = 0.497 and the floor for
20000 exact i.i.d. draws is 0.026 +- 0.002):
    smc, 20000 particles / 20000 draws:            mean 0.045, sd 0.006, max 0.053  -> assert < 0.07
    smc, budget 40000 in sweeps of 500, ess 1.0:   mean 0.041, sd 0.003, max 0.047  -> assert < 0.07
    best-of-n-is, 20000 candidates / 20000 draws:  mean 0.053, sd 0.007, max 0.067  -> assert < 0.085
Each bound is about mean + 4 sd; a target off by 10% in lambda is already 0.066 away from pi*.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from specdifftree.bench.exact import empirical, enumerate_sequences, target, tv
from specdifftree.prior.builtin import BUILTIN_PROBLEMS
from specdifftree.prior.markov import MarkovPrior
from specdifftree.search.common import Problem, SearchConfig
from specdifftree.search.registry import get_method

BASELINES = ["greedy", "sample", "best-of-n", "best-of-n-is", "beam", "smc", "mcts"]
SMALL = SearchConfig(samples=5, n=16, beam_width=4, particles=16, iterations=64, batch_size=8)


def toy3() -> Problem:
    bp = BUILTIN_PROBLEMS["toy3"]()
    return Problem(bp.prior, bp.reward)


def run(method: str, problem: Problem, cfg: SearchConfig = SMALL, seed: int = 0, progress=None):
    return get_method(method)(problem, cfg, np.random.default_rng(seed), progress=progress)


class UniqueHandles(MarkovPrior):
    """A Markov prior that hands out a fresh handle per prefix and checks releases like a KV cache would."""

    def __init__(self, base: MarkovPrior):
        super().__init__(base.vocab, base.eos_id, base.max_len, np.exp(base.log_initial), np.exp(base.log_transition))
        self.state: dict[int, int] = {}  # live handle -> last token
        self.issued = 0

    def _issue(self, tokens) -> np.ndarray:
        ids = np.arange(self.issued, self.issued + len(tokens))
        self.issued += len(tokens)
        self.state.update(zip(ids.tolist(), np.asarray(tokens).tolist()))
        return ids

    def start(self):
        _, logp = super().start()
        return int(self._issue([-1])[0]), logp

    def advance(self, handles, tokens):
        assert all(h in self.state for h in np.asarray(handles).tolist()), "advanced a released handle"
        _, logp = super().advance(handles, tokens)
        return self._issue(tokens), logp

    def release(self, handles):
        for h in np.asarray(handles).tolist():
            assert self.state.pop(h, None) is not None, f"released handle {h} twice or never issued"


# ------------------------------------------------------------------ shape of results


@pytest.mark.parametrize("method", BASELINES)
def test_samples_well_formed(method):
    problem = toy3()
    logp = enumerate_sequences(problem.prior)
    done = []
    res = run(method, problem, progress=done.append)
    assert res.method == method and sum(done) > 0
    assert len(res.samples) == (1 if method == "greedy" else SMALL.samples)
    prior = problem.prior
    for s in res.samples:
        assert prior.eos_id not in s.tokens and len(s.tokens) <= prior.max_len
        assert s.text == prior.decode(s.tokens)
        assert s.reward == problem.score(s.tokens)
        assert s.logp == pytest.approx(logp[tuple(s.tokens)])
    assert res.forward_tokens >= 1 and res.model_calls >= 1


@pytest.mark.parametrize("method", BASELINES)
def test_same_seed_same_output(method):
    a, b = run(method, toy3(), seed=3), run(method, toy3(), seed=3)
    assert [s.tokens for s in a.samples] == [s.tokens for s in b.samples]
    assert (a.forward_tokens, a.model_calls) == (b.forward_tokens, b.model_calls)


# ------------------------------------------------------------------ cost accounting


def deterministic() -> Problem:
    """Only 'aaaa' is possible: every method's cost is a hand count."""
    prior = MarkovPrior(["a", "b", "<eos>"], 2, 4, [1, 0, 0], [[1, 0, 0], [1, 0, 0], [1, 0, 0]])
    return Problem(prior, BUILTIN_PROBLEMS["toy3"]().reward)


@pytest.mark.parametrize("method,tokens", [
    ("greedy", 1 + 3),  # prompt once, then tokens 1..3 are fed back; the 4th hits max_len
    ("sample", 1 + 3 * 5),  # samples=5 rows, batched: still 4 calls
    ("best-of-n", 1 + 3 * 16),
    ("best-of-n-is", 1 + 3 * 16),
    ("beam", 1 + 3),  # width 4, but only one continuation has probability > 0
    ("smc", 1 + 3 * 16),
    ("mcts", 1 + 3),  # the tree shares every prefix: 'a', 'aa', 'aaa' evaluated once
])
def test_hand_counted_cost(method, tokens):
    res = run(method, deterministic())
    assert [s.text for s in res.samples][:1] == ["aaaa"]
    assert (res.forward_tokens, res.model_calls) == (tokens, 4)


def test_sample_cost_matches_lengths():
    """Each sequence feeds back its tokens except one that reaches max_len; one call per step."""
    problem = toy3()
    res = run("sample", problem, SearchConfig(samples=32))
    fed = [min(len(s.tokens), problem.prior.max_len - 1) for s in res.samples]
    assert res.forward_tokens == 1 + sum(fed)
    assert res.model_calls == 1 + max(fed)


def test_mcts_cost_is_evaluated_nodes():
    res = run("mcts", toy3())
    assert res.forward_tokens == int(res.tree.evaluated[: res.tree.size].sum())


@pytest.mark.parametrize("method", ["beam", "smc"])
def test_handles_released_exactly_once(method):
    prior = UniqueHandles(BUILTIN_PROBLEMS["toy3"]().prior)
    problem = Problem(prior, BUILTIN_PROBLEMS["toy3"]().reward)
    run(method, problem, SearchConfig(samples=4, beam_width=6, particles=64, ess_threshold=0.9))
    assert prior.state == {}


@pytest.mark.parametrize("method,cfg,batch", [  # batch: the most one batch (prompt included) can cost
    ("best-of-n", SearchConfig(n=16), 1 + 7 * 16),
    ("best-of-n-is", SearchConfig(n=16), 1 + 7 * 16),
    ("smc", SearchConfig(particles=16), 1 + 7 * 16),
    ("mcts", SearchConfig(iterations=10**6, batch_size=8), 1 + 7 * 8),
])
@pytest.mark.parametrize("budget", [1, 200])
def test_budget_respected(method, cfg, batch, budget):
    """Work goes on until the budget is spent and stops within one batch of it.

    On deep2 (max_len 8): toy3's tree has only 40 prefixes to evaluate, so a tree search there
    could never spend 200 tokens."""
    bp = BUILTIN_PROBLEMS["deep2"]()
    res = run(method, Problem(bp.prior, bp.reward), dataclasses.replace(cfg, budget=budget))
    assert budget <= res.forward_tokens <= budget + batch


@pytest.mark.parametrize("method", ["best-of-n", "smc"])
def test_budget_loop_ends_when_draws_are_free(method):
    """max_len 1: after the prompt, SMC particles cost nothing; the budget loop must still end."""
    prior = MarkovPrior(["a", "<eos>"], 1, 1, [0.5, 0.5], [[0.5, 0.5], [0.5, 0.5]])
    res = run(method, Problem(prior, lambda text, ctx: 0.0), SearchConfig(n=16, particles=16, budget=100))
    assert res.forward_tokens <= 100 and len(res.samples) >= 1


# ------------------------------------------------------------------ what each method finds


def test_greedy_is_argmax_path_and_top_k_1():
    problem = toy3()
    prior = problem.prior
    path, logp = [], prior.log_initial
    while len(path) < prior.max_len and (a := int(np.argmax(logp))) != prior.eos_id:
        path.append(a)
        logp = prior.log_transition[a]
    assert run("greedy", problem).samples[0].tokens == path
    topk = run("sample", problem, SearchConfig(samples=6, top_k=1), seed=1)
    assert all(s.tokens == path for s in topk.samples)


def test_beam_width_one_is_greedy():
    beam = run("beam", toy3(), SearchConfig(beam_width=1, samples=1))
    greedy = run("greedy", toy3())
    assert beam.samples[0].tokens == greedy.samples[0].tokens
    assert (beam.forward_tokens, beam.model_calls) == (greedy.forward_tokens, greedy.model_calls)


def test_full_width_beam_is_exact():
    """Wider than the 121 sequences: beam enumerates them all and ranks by log p + lam r."""
    problem = toy3()
    logp = enumerate_sequences(problem.prior)
    cfg = SearchConfig(beam_width=128, samples=3, lam=0.5)
    best = max(logp, key=lambda s: logp[s] + 0.5 * problem.score(s))
    assert tuple(run("beam", problem, cfg).samples[0].tokens) == best
    flat = Problem(problem.prior, lambda text, ctx: 0.0)
    mode = max(logp, key=logp.get)
    assert tuple(run("beam", flat, cfg).samples[0].tokens) == mode == (0,)  # 'a', above greedy's 'aaaa'


def test_best_of_n_is_best_distinct_first():
    res = run("best-of-n", toy3(), SearchConfig(n=256, samples=8))
    rewards = [s.reward for s in res.samples]
    assert rewards == sorted(rewards, reverse=True)
    assert len({tuple(s.tokens) for s in res.samples}) == 8


def test_mcts_finds_max_reward():
    problem = toy3()
    top = max(problem.score(s) for s in enumerate_sequences(problem.prior))
    res = run("mcts", problem, SearchConfig(iterations=500, batch_size=8, samples=3))
    assert res.samples[0].reward == top == 4.0  # 'cccc'
    assert [s.reward for s in res.samples] == sorted((s.reward for s in res.samples), reverse=True)


@pytest.mark.parametrize("method,cfg,budget,bound", [
    ("smc", SearchConfig(particles=20000, samples=20000), None, 0.07),
    ("smc", SearchConfig(particles=500, samples=20000, ess_threshold=1.0), 40000, 0.07),
    ("best-of-n-is", SearchConfig(n=20000, samples=20000), None, 0.085),
])
def test_approaches_pi_star(method, cfg, budget, bound):
    problem = toy3()
    _, pi_star = target(toy3(), cfg.lam)
    res = run(method, problem, dataclasses.replace(cfg, budget=budget))
    assert tv(empirical([s.tokens for s in res.samples]), pi_star) < bound

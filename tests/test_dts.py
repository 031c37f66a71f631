"""DTS maths: closed-form soft-Bellman backups, exactness against enumeration, honest cost counting."""

import math

import networkx as nx
import numpy as np
import pytest

from specdifftree.bench.exact import empirical, noise_floor, target, tv
from specdifftree.prior.builtin import BUILTIN_PROBLEMS
from specdifftree.prior.markov import MarkovPrior
from specdifftree.search.common import Problem, SearchConfig
from specdifftree.search.dts import backup, evaluate, leaf_log_probs, new_search, reward, run_dts, soft_value
from specdifftree.search.tree import ROOT, save_graphml


def _two_level_tree(lam: float, rule: str):
    """root -> {a, b}; a -> {a.EOS (r=1.0), a.a (r=-2.0, max_len)}; b -> {b.EOS (r=0.5)}."""
    prior = MarkovPrior.from_dict({
        "vocab": ["a", "b", "<eos>"], "eos": 2, "max_len": 2,
        "initial": [0.6, 0.3, 0.1], "transition": [[0.5, 0.2, 0.3], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]],
    })
    rewards = {"": 0.0, "a": 1.0, "aa": -2.0, "b": 0.5}
    s = new_search(Problem(prior, lambda text, ctx: rewards[text]), np.random.default_rng(0))
    tree = s.tree
    a = tree.add(ROOT, 0, math.log(0.6))
    b = tree.add(ROOT, 1, math.log(0.3))
    evaluate(s, np.array([a, b]))
    a_eos = tree.add(a, 2, math.log(0.3))
    aa = tree.add(a, 0, math.log(0.5))
    b_eos = tree.add(b, 2, math.log(0.8))
    tree.draws[[a, b, a_eos, aa, b_eos]] = [3, 1, 2, 1, 1]  # multiplicities for the "count" rule
    for leaf in (a_eos, aa, b_eos, a_eos):  # a_eos backed up twice: a revisit changes visits, not values
        reward(s, leaf)
        backup(tree, leaf, lam, rule)
    return tree, a, b


@pytest.mark.parametrize("lam", [0.3, 1.0, 4.0])
def test_backup_two_level_prior_weights(lam):
    tree, a, b = _two_level_tree(lam, "prior")
    v_a = math.log((0.3 * math.exp(lam * 1.0) + 0.5 * math.exp(lam * -2.0)) / 0.8) / lam
    v_b = 0.5
    v_root = math.log((0.6 * math.exp(lam * v_a) + 0.3 * math.exp(lam * v_b)) / 0.9) / lam
    assert tree.value[a] == pytest.approx(v_a, abs=1e-12)
    assert tree.value[b] == pytest.approx(v_b, abs=1e-12)
    assert tree.value[ROOT] == pytest.approx(v_root, abs=1e-12)
    assert list(tree.visits[[ROOT, a, b]]) == [4, 3, 1]


def test_backup_two_level_count_weights():
    lam = 2.0
    tree, a, b = _two_level_tree(lam, "count")
    v_a = math.log((2 * math.exp(lam * 1.0) + 1 * math.exp(lam * -2.0)) / 3) / lam
    v_root = math.log((3 * math.exp(lam * v_a) + 1 * math.exp(lam * 0.5)) / 4) / lam
    assert tree.value[ROOT] == pytest.approx(v_root, abs=1e-12)


def test_soft_value_limits():
    v, lw = np.array([1.0, -1.0, 3.0]), np.log(np.array([0.2, 0.5, 0.3]))
    assert soft_value(v, lw, 1e-6) == pytest.approx(0.2 - 0.5 + 0.9, abs=1e-5)  # lam -> 0: weighted mean
    assert soft_value(v, lw, 1e4) == pytest.approx(3.0, abs=1e-3)  # lam -> inf: max
    assert soft_value(np.array([7.0]), np.array([-3.0]), 1.0) == pytest.approx(7.0)  # one child: its value


def test_dts_exact_on_toy3_acceptance(toy3):
    """Acceptance: TV(prior, pi*) >= 0.3, and DTS (5000 iterations, 20,000 samples) is within 0.03 of
    the noise floor of 20,000 exact i.i.d. draws."""
    problem, lam = toy3
    prior_dist, pi = target(problem, lam)
    assert tv(prior_dist, pi) >= 0.3
    result = run_dts(problem, SearchConfig(iterations=5000, samples=20000, lam=lam, seed=0), np.random.default_rng(0))
    floor, _ = noise_floor(pi, 20000, np.random.default_rng(1))
    got = tv(empirical([s.tokens for s in result.samples]), pi)
    assert got <= floor + 0.03, (got, floor)
    # and the finished tree's own distribution (no sampling noise) is nearly exact
    leaves, logp = leaf_log_probs(result.tree, lam, "prior")
    tree_dist = {tuple(result.tree.tokens(n)): float(np.exp(lp)) for n, lp in zip(leaves, logp)}
    assert sum(tree_dist.values()) == pytest.approx(1.0)
    assert tv(tree_dist, pi) < 0.01


def test_fully_explored_tree_is_exactly_pi_star(toy3):
    """Once every sequence is a leaf, the re-descent distribution equals pi* (to the float32 precision
    in which the tree stores next-token log-probs)."""
    problem, lam = toy3
    _, pi = target(problem, lam)
    cfg = SearchConfig(iterations=20000, lam=lam, widen_c=50.0, seed=3)
    result = run_dts(problem, cfg, np.random.default_rng(3))
    leaves, logp = leaf_log_probs(result.tree, lam, "prior")
    assert len(leaves) == len(pi)
    tree_dist = {tuple(result.tree.tokens(n)): float(np.exp(lp)) for n, lp in zip(leaves, logp)}
    assert tv(tree_dist, pi) < 1e-6


def test_samples_are_complete_scored_sequences(toy3):
    problem, lam = toy3
    result = run_dts(problem, SearchConfig(iterations=300, samples=200, lam=lam), np.random.default_rng(0))
    prior = problem.prior
    for s in result.samples:
        assert prior.eos_id not in s.tokens and len(s.tokens) <= prior.max_len
        assert s.text == prior.decode(s.tokens)
        assert s.reward == problem.reward(s.text, problem.context)
        assert math.isfinite(s.logp)


class RecordingPrior(MarkovPrior):
    """Records the full prefix behind every forward token, to prove no prefix is run twice."""

    def __init__(self, base: MarkovPrior):
        super().__init__(base.vocab, base.eos_id, base.max_len, np.exp(base.log_initial), np.exp(base.log_transition))
        self.prefixes: list[tuple] = []
        self._paths = {-1: ()}
        self._next = 0

    def start(self):
        self.prefixes.append(())
        _, logp = super().start()
        return -1, logp

    def advance(self, handles, tokens):
        kids = []
        for h, t in zip(handles.tolist(), tokens.tolist()):
            path = self._paths[h] + (t,)
            self.prefixes.append(path)
            self._next += 1
            self._paths[self._next] = path
            kids.append(self._next)
        _, logp = super().advance(handles, tokens)
        return np.array(kids), logp


@pytest.mark.parametrize("star", [False, True])
def test_no_prefix_is_run_twice_and_cost_is_counted(star):
    bp = BUILTIN_PROBLEMS["deep2"]()
    prior = RecordingPrior(bp.prior)
    problem = Problem(prior, bp.reward)
    result = run_dts(problem, SearchConfig(iterations=400, batch_size=8, lam=1.0), np.random.default_rng(0), star=star)
    assert len(prior.prefixes) == len(set(prior.prefixes))  # every forward token is a new prefix
    assert result.forward_tokens == len(prior.prefixes) == int(result.tree.evaluated[: result.tree.size].sum())
    assert result.model_calls == prior.cost.model_calls
    assert result.tree_nodes == result.tree.size


def test_budget_caps_forward_tokens():
    bp = BUILTIN_PROBLEMS["deep2"]()
    problem = Problem(bp.prior, bp.reward)
    cfg = SearchConfig(iterations=100000, batch_size=4, lam=1.0, budget=100)
    result = run_dts(problem, cfg, np.random.default_rng(0))
    # the round that crosses the budget finishes its rollouts: at most batch_size * max_len over
    assert 100 <= result.forward_tokens <= 100 + cfg.batch_size * bp.prior.max_len


def test_same_seed_same_output(toy3):
    problem, lam = toy3
    runs = [run_dts(Problem(problem.prior, problem.reward), SearchConfig(iterations=500, samples=50, lam=lam, seed=7),
                    np.random.default_rng(7)) for _ in range(2)]
    assert [s.tokens for s in runs[0].samples] == [s.tokens for s in runs[1].samples]
    assert runs[0].forward_tokens == runs[1].forward_tokens


def test_dts_star_finds_the_best_sequence(toy3):
    problem, lam = toy3
    _, pi = target(problem, lam)
    best = max(problem.score(s) for s in pi)
    result = run_dts(problem, SearchConfig(iterations=2000, samples=3, lam=lam), np.random.default_rng(0), star=True)
    assert result.samples[0].reward == best
    assert [s.reward for s in result.samples] == sorted((s.reward for s in result.samples), reverse=True)


def test_graphml_export(tmp_path, toy3):
    problem, lam = toy3
    result = run_dts(problem, SearchConfig(iterations=200, lam=lam), np.random.default_rng(0))
    path = tmp_path / "tree.graphml"
    save_graphml(result.tree, str(path))
    g = nx.read_graphml(path)
    assert g.number_of_nodes() == result.tree.size and g.number_of_edges() == result.tree.size - 1
    root = g.nodes["0"]
    assert root["visits"] == 200 and root["text"] == "<root>"
    assert {"token", "visits", "value", "reward", "logp"} <= set(root)


def test_tree_is_storage_and_the_moves_are_functions_of_dts():
    """`search/tree.py` never reaches the prior or the problem (no move lives on the storage), and
    `search/dts.py` defines the moves as module-level functions."""
    import ast
    import inspect

    from specdifftree.search import dts, tree

    source = ast.parse(inspect.getsource(tree))
    names = {n.attr for n in ast.walk(source) if isinstance(n, ast.Attribute)}
    names |= {n.id for n in ast.walk(source) if isinstance(n, ast.Name)}
    reach = {"prior", "problem", "start", "advance", "release", "features", "score", "rng", "random"}
    assert not names & reach, names & reach
    funcs = {n.name for n in ast.parse(inspect.getsource(dts)).body if isinstance(n, ast.FunctionDef)}
    assert {"select", "expand", "rollout", "backup", "grow", "run_dts"} <= funcs
    methods = {n.name for c in ast.walk(source) if isinstance(c, ast.ClassDef) for n in c.body
               if isinstance(n, ast.FunctionDef)}
    assert not methods & {"select", "expand", "rollout", "backup", "descend", "draw", "evaluate"}


def test_children_are_arrays_in_creation_order():
    """Child links are blocks of one array (no per-node dict); a node's children come back in the
    order they were added, and `child` finds each by its token."""
    from specdifftree.search.tree import NO_NODE, NO_PARENT, NO_TOKEN, Tree

    t = Tree(eos=99, max_len=50, capacity=2)
    root = t.add(NO_PARENT, NO_TOKEN, 0.0)
    made = {p: [] for p in range(4)}
    rng = np.random.default_rng(0)
    for i in range(200):
        p = int(rng.integers(0, min(4, t.size)))
        made[p].append(t.add(p, 1000 + i, -1.0))
    for p, kids in made.items():
        assert t.children(p).tolist() == kids
        assert all(t.child(p, int(t.token[k])) == k for k in kids)
    assert t.child(root, 5) == NO_NODE
    assert not any(isinstance(v, dict) for k, v in vars(t).items() if k != "fields")

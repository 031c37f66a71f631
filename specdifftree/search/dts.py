"""Diffusion Tree Sampling over tokens (Jain et al. 2025), adapted to a discrete vocabulary.

Target: pi*(x) ~ p(x|c) exp(lam r(x)). Soft value V(s) = (1/lam) log E_{x~p(.|s)} exp(lam r(x)),
which obeys V(s) = (1/lam) log sum_a p(a|s) exp(lam V(s.a)), and pi*(a|s) ~ p(a|s) exp(lam V(s.a)).

The tree estimates V by a *weighted* log-mean-exp over the children it has explored:

    v(s) = (1/lam) log [ sum_c w_c exp(lam v_c) / sum_c w_c ]

Children drawn i.i.d. from p(.|s) collide on the same token, so each distinct token is one
child, weighted either by w_c = p(a_c|s) ("prior", default: exact once all children are
explored) or by its draw multiplicity ("count": the unbiased Monte-Carlo weight). The same
weight enters selection, backup and the final re-descent, which makes the finished tree's
sampling distribution exactly  P(x) ~ Q(x) exp(lam r(x))  over its leaves, where Q is the prior
renormalised over explored children (see `leaf_log_probs`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from specdifftree.search.common import Problem, Sample, SearchConfig, SearchResult, Stopwatch, logsumexp, make_sample
from specdifftree.search.tree import ROOT, Tree


def soft_value(values: np.ndarray, log_w: np.ndarray, lam: float) -> float:
    """(1/lam) log( sum_i w_i exp(lam v_i) / sum_i w_i ).   values, log_w: [K] -> scalar"""
    return float((logsumexp(lam * values + log_w) - logsumexp(log_w)) / lam)


def backup(tree: Tree, leaf: int, lam: float, rule: str, value: float | None = None) -> None:
    """Soft-Bellman backup from a leaf to the root; visit counts grow by one on the way. The leaf's
    value is its reward, or `value` for a non-terminal leaf (S-ADT: the flow network's estimate)."""
    tree.value[leaf] = tree.reward[leaf] if value is None else value
    n = leaf
    while n >= ROOT:
        tree.visits[n] += 1
        if not tree.terminal[n] and n != leaf:
            kids = tree.children(n)
            kids = kids[tree.visits[kids] > 0]
            tree.value[n] = soft_value(tree.value[kids], tree.log_weight(kids, rule), lam)
        n = int(tree.parent[n])


def choose_sample(cfg: SearchConfig):
    """DTS: draw a child with probability ~ w_c exp(lam v_c)."""

    def choose(tree: Tree, n: int, kids: np.ndarray, rng: np.random.Generator) -> int:
        s = cfg.lam * tree.value[kids] + tree.log_weight(kids, cfg.child_weight)
        cdf = np.cumsum(np.exp(s - s.max()))
        return int(kids[min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(kids) - 1)])

    return choose


def choose_uct(cfg: SearchConfig):
    """DTS*: argmax of v_c + c_uct sqrt(log N(s) / N(c))."""

    def choose(tree: Tree, n: int, kids: np.ndarray, rng: np.random.Generator) -> int:
        bonus = cfg.c_uct * np.sqrt(np.log(max(tree.visits[n], 1)) / tree.visits[kids])
        return int(kids[np.argmax(tree.value[kids] + bonus)])

    return choose


def leaf_log_probs(tree: Tree, lam: float, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """The finished tree's exact sampling distribution under the DTS re-descent rule.

    Returns (leaves [L], log-probabilities [L]) over the visited terminal nodes. Parents come
    before children in index order, so one pass per depth accumulates path probabilities.
    """
    nodes = np.flatnonzero(tree.visits[: tree.size] > 0)[1:]  # visited, root excluded
    s = lam * tree.value[nodes] + tree.log_weight(nodes, rule)
    log_z = np.full(tree.size, -np.inf)
    np.logaddexp.at(log_z, tree.parent[nodes], s)
    log_q = np.zeros(tree.size)
    log_q[nodes] = s - log_z[tree.parent[nodes]]
    log_path = np.zeros(tree.size)
    for d in range(1, int(tree.depth[nodes].max(initial=0)) + 1):
        at = nodes[tree.depth[nodes] == d]
        log_path[at] = log_path[tree.parent[at]] + log_q[at]
    leaves = nodes[tree.terminal[nodes]]
    return leaves, log_path[leaves]


def grow(tree: Tree, problem: Problem, cfg: SearchConfig, rng: np.random.Generator, choose,
         backup_leaf: Callable[[int], None], progress=None) -> None:
    """The search loop shared by DTS, DTS* and MCTS: rounds of select -> expand -> batched
    rollout -> backup, until `cfg.iterations` or the budget runs out (always at least one round)."""
    done = 0
    while done < cfg.iterations and (done == 0 or not problem.exhausted(cfg.budget)):
        k = min(cfg.batch_size, cfg.iterations - done)
        starts = np.array([tree.descend(rng, cfg.widen_c, cfg.widen_alpha, choose) for _ in range(k)])
        for leaf in tree.rollout(starts, rng).tolist():
            backup_leaf(leaf)
        done += k
        if progress is not None:
            progress(k)


def best_found(tree: Tree, k: int) -> list[Sample]:
    """The k best distinct terminal sequences the search reached, by reward, best first."""
    leaves = np.flatnonzero(tree.terminal[: tree.size] & (tree.visits[: tree.size] > 0))
    picks = leaves[np.argsort(-tree.reward[leaves], kind="stable")][:k]
    return [make_sample(tree.problem, tree.tokens(n), path_logp(tree, n)) for n in picks.tolist()]


def run_dts(problem: Problem, cfg: SearchConfig, rng: np.random.Generator, star: bool = False, progress=None) -> SearchResult:
    """DTS (star=False): `cfg.samples` draws from the tree by re-descent, no model calls.
    DTS* (star=True): the best distinct sequences found, best first."""
    watch = Stopwatch(problem)
    tree = Tree(problem)
    choose = choose_uct(cfg) if star else choose_sample(cfg)
    grow(tree, problem, cfg, rng, choose, lambda leaf: backup(tree, leaf, cfg.lam, cfg.child_weight), progress)
    if star:
        return watch.result("dts-star", best_found(tree, cfg.samples), tree)
    leaves, logp = leaf_log_probs(tree, cfg.lam, cfg.child_weight)
    p = np.exp(logp - logsumexp(logp))
    picks = rng.choice(leaves, size=cfg.samples, p=p / p.sum())
    unique = {n: make_sample(problem, tree.tokens(n), path_logp(tree, n)) for n in set(picks.tolist())}
    return watch.result("dts", [unique[n] for n in picks.tolist()], tree)


def path_logp(tree: Tree, n: int) -> float:
    """log p(x|c) of the path to n under the prior."""
    total = 0.0
    while n > ROOT:
        total += tree.logp[n]
        n = int(tree.parent[n])
    return float(total)


def run_dts_star(problem: Problem, cfg: SearchConfig, rng: np.random.Generator, progress=None) -> SearchResult:
    return run_dts(problem, cfg, rng, star=True, progress=progress)

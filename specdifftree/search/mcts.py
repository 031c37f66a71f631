"""UCT Monte-Carlo tree search with progressive widening and mean backups, on the DTS moves.

Selection is `dts.select` with the UCB rule of DTS* (`choose_uct`), which here reads mean
values: argmax of mean(c) + c_uct sqrt(log N(s) / N(c)). Rollouts run batched as in DTS; the
backup keeps, at each node on the path, the running mean of the rewards that went through it.
"""

from __future__ import annotations

import numpy as np

from specdifftree.search.common import Problem, SearchConfig, SearchResult, Stopwatch
from specdifftree.search.dts import best_found, choose_uct, grow, new_search
from specdifftree.search.tree import ROOT, Tree


def mean_backup(tree: Tree, leaf: int) -> None:
    """From a terminal leaf to the root: visits += 1, value = running mean of the rewards seen."""
    r, n = tree.reward[leaf], leaf
    while n >= ROOT:
        tree.visits[n] += 1
        tree.value[n] += (r - tree.value[n]) / tree.visits[n]
        n = int(tree.parent[n])


def run_mcts(problem: Problem, cfg: SearchConfig, rng: np.random.Generator, progress=None) -> SearchResult:
    """`cfg.iterations` select -> expand -> rollout -> backup, `cfg.batch_size` rollouts per batched round,
    stopping early when `cfg.budget` is exhausted."""
    watch = Stopwatch(problem)
    s = new_search(problem, rng)
    grow(s, cfg, choose_uct(cfg), mean_backup, progress=progress)
    return watch.result("mcts", best_found(problem, s.tree, cfg.samples), s.tree)

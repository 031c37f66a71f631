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

The moves, on a `Search` (the tree's storage, the problem, the random stream, the proposal):

    select(s, choose, c, alpha) -> node     walk down from the root, widening (expand) or choosing
    expand(s, nodes [B]) -> kids [B]        one token drawn at each node from its proposal rows
    rollout(s, starts [B]) -> leaves [B]    expand from each start to a terminal, one batch per step
    backup(tree, leaf, lam, rule, value)    soft-Bellman values from the leaf up to the root
    grow(s, cfg, choose, backup_leaf, rollout_fn)   the driver: rounds of select, rollout, backup

DTS, DTS* (`choose_uct`), MCTS (`search/mcts.py`) and S-ADT (`amortize/sadt.py`) differ only by
what they pass: the selection rule, the expansion proposal (`Search.propose`, `Search.on_child`),
the rollout policy and the backup with its leaf value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from specdifftree.search.common import Problem, Sample, SearchConfig, SearchResult, Stopwatch, logsumexp, make_sample
from specdifftree.search.sampler import is_numpy, sample
from specdifftree.search.tree import NO_NODE, NO_PARENT, NO_TOKEN, ROOT, Tree


def prior_rows(s: "Search", nodes: np.ndarray, handles: np.ndarray, logp) -> list:
    """DTS's proposal: the prior itself. nodes, handles [B], logp [B, V] -> the rows the pool holds,
    [logp]; host rows in float32, device rows as the prior gives them."""
    return [np.asarray(logp, np.float32) if is_numpy(logp) else logp]


@dataclass
class Search:
    """One tree search. propose(s, nodes [B], handles [B], logp [B, V]) -> channels, each [B, V]: what
    the row pool holds per evaluated node (expansions draw from channel 0). on_child(s, child), when
    given, sets a new child's fields from its parent's rows (S-ADT: log p and F_phi)."""

    tree: Tree
    problem: Problem
    rng: np.random.Generator
    propose: Callable = prior_rows
    on_child: Optional[Callable] = None


def new_search(problem: Problem, rng: np.random.Generator, propose: Callable = prior_rows,
               on_child: Optional[Callable] = None, extra_fields: Optional[dict] = None) -> Search:
    """A search whose tree holds the evaluated root (the prompt prefilled once)."""
    prior = problem.prior
    s = Search(Tree(prior.eos_id, prior.max_len, prior.vocab, extra_fields=extra_fields), problem, rng, propose, on_child)
    handle, logp = prior.start()
    root = s.tree.add(NO_PARENT, NO_TOKEN, 0.0)
    hold(s, np.array([root]), np.array([handle]), logp[None])
    return s


def hold(s: Search, nodes: np.ndarray, handles: np.ndarray, logp) -> None:
    """nodes [B] take their handles [B] and the proposal's rows of logp [B, V] into the pool."""
    t = s.tree
    t.handle[nodes] = handles
    t.rows.put(nodes, s.propose(s, nodes, handles, logp), t.slot)
    t.evaluated[nodes] = True


def evaluate(s: Search, nodes: np.ndarray) -> None:
    """Hold the rows of `nodes` [B]: one batched `advance` for those that need p(.|s) (not evaluated
    yet, or their row was evicted from the pool: recomputed and counted). Terminals are skipped."""
    t, prior = s.tree, s.problem.prior
    nodes = np.unique(nodes[~t.terminal[nodes]])
    held = t.slot[nodes] >= 0
    t.rows.begin()
    t.rows.touch(t.slot[nodes[held]])
    todo = nodes[~held]
    if len(todo):
        again = todo[t.evaluated[todo]]
        old = t.handle[again]
        handles, logp = prior.advance(t.handle[t.parent[todo]], t.token[todo])
        hold(s, todo, handles, logp)
        if len(again):
            t.reloads += len(again)
            prior.release(old)


def expand(s: Search, nodes: np.ndarray) -> np.ndarray:
    """Draw one token at each node from its proposal rows and move to that child, adding it if new.
    nodes [B] non-terminal (repeats allowed) -> [B] children; a draw landing on an existing child
    raises its `draws`. New children are not evaluated yet."""
    t = s.tree
    evaluate(s, nodes)
    toks, logps = sample(t.rows.take(t.slot[nodes]), s.rng.random(len(nodes)))
    out = np.empty(len(nodes), dtype=np.int64)
    for i, (n, a, lp) in enumerate(zip(nodes.tolist(), toks.tolist(), logps.tolist())):
        child = t.child(n, a)
        if child == NO_NODE:
            child = t.add(n, a, lp)
            if s.on_child is not None:
                s.on_child(s, child)
        t.draws[child] += 1
        t.n_draws[n] += 1
        out[i] = child
    return out


def select(s: Search, choose: Callable, c: float, alpha: float) -> int:
    """Walk down from the root to where a rollout should start. At each node: stop at a terminal or
    at a node not evaluated yet (added earlier in the same round of the driver); expand it while it may widen (or while
    none of its children is backed up yet); otherwise `choose(tree, n, kids, rng)` among the
    backed-up children."""
    t, n = s.tree, ROOT
    while not t.terminal[n] and t.evaluated[n]:
        kids = t.children(n)
        kids = kids[t.visits[kids] > 0]
        if len(kids) == 0 or may_widen(t, n, c, alpha):
            n = int(expand(s, np.array([n]))[0])
        else:
            n = choose(t, n, kids, s.rng)
    return n


def may_widen(tree: Tree, n: int, c: float, alpha: float) -> bool:
    """Progressive widening: a node may make C * max(N, 1)^alpha draws."""
    return tree.n_draws[n] < c * max(int(tree.visits[n]), 1) ** alpha


def rollout(s: Search, starts: np.ndarray) -> np.ndarray:
    """Expand from each start node [B] (repeats allowed) to a terminal, keeping every node: each step
    is one batched model call over the distinct new prefixes. Returns [B] leaves, rewards computed."""
    cur = np.asarray(starts, dtype=np.int64).copy()
    live = np.flatnonzero(~s.tree.terminal[cur])
    while len(live):
        cur[live] = expand(s, cur[live])
        live = live[~s.tree.terminal[cur[live]]]
    for leaf in cur.tolist():
        reward(s, leaf)
    return cur


def reward(s: Search, leaf: int) -> float:
    """The terminal leaf's reward, computed once."""
    t = s.tree
    if np.isnan(t.reward[leaf]):
        t.reward[leaf] = s.problem.score(t.tokens(leaf))
    return float(t.reward[leaf])


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


def grow(s: Search, cfg: SearchConfig, choose: Callable, backup_leaf: Callable[[Tree, int], None],
         rollout_fn: Callable = rollout, progress=None) -> None:
    """Rounds of select, batched rollout and backup, until `cfg.iterations` or the budget runs out
    (always at least one round)."""
    done = 0
    while done < cfg.iterations and (done == 0 or not s.problem.exhausted(cfg.budget)):
        k = min(cfg.batch_size, cfg.iterations - done)
        starts = np.array([select(s, choose, cfg.widen_c, cfg.widen_alpha) for _ in range(k)])
        for leaf in rollout_fn(s, starts).tolist():
            backup_leaf(s.tree, leaf)
        done += k
        if progress is not None:
            progress(k)


def choose_soft(lam: float, rule: str, value: Callable = lambda tree, kids: tree.value[kids]):
    """DTS: a child with probability ~ w_c exp(lam v_c), v_c = value(tree, kids [K]) -> [K]."""

    def choose(tree: Tree, n: int, kids: np.ndarray, rng: np.random.Generator) -> int:
        s = lam * value(tree, kids) + tree.log_weight(kids, rule)
        return int(kids[sample((s - s.max())[None], rng.random(1))[0][0]])

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


def best_found(problem: Problem, tree: Tree, k: int) -> list[Sample]:
    """The k best distinct terminal sequences the search reached, by reward, best first."""
    leaves = np.flatnonzero(tree.terminal[: tree.size] & (tree.visits[: tree.size] > 0))
    picks = leaves[np.argsort(-tree.reward[leaves], kind="stable")][:k]
    return [make_sample(problem, tree.tokens(n), tree.path_logp(n)) for n in picks.tolist()]


def samples_at(problem: Problem, tree: Tree, leaves: np.ndarray) -> list[Sample]:
    """One sample per leaf [S] (repeats share one `Sample`)."""
    unique = {n: make_sample(problem, tree.tokens(n), tree.path_logp(n)) for n in set(leaves.tolist())}
    return [unique[n] for n in leaves.tolist()]


def run_dts(problem: Problem, cfg: SearchConfig, rng: np.random.Generator, star: bool = False, progress=None) -> SearchResult:
    """DTS (star=False): `cfg.samples` draws from the tree by re-descent, no model calls.
    DTS* (star=True): the best distinct sequences found, best first."""
    watch = Stopwatch(problem)
    s = new_search(problem, rng)
    choose = choose_uct(cfg) if star else choose_soft(cfg.lam, cfg.child_weight)
    grow(s, cfg, choose, lambda tree, leaf: backup(tree, leaf, cfg.lam, cfg.child_weight), progress=progress)
    if star:
        return watch.result("dts-star", best_found(problem, s.tree, cfg.samples), s.tree)
    leaves, logp = leaf_log_probs(s.tree, cfg.lam, cfg.child_weight)
    p = np.exp(logp - logsumexp(logp))
    picks = rng.choice(leaves, size=cfg.samples, p=p / p.sum())
    return watch.result("dts", samples_at(problem, s.tree, picks), s.tree)


def run_dts_star(problem: Problem, cfg: SearchConfig, rng: np.random.Generator, progress=None) -> SearchResult:
    return run_dts(problem, cfg, rng, star=True, progress=progress)

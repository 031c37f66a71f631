"""S-ADT: search amortized by a flow network (`sdt amortize`), two ways.

sadt         DTS's moves with S-ADT's plug-ins. Selection draws a child with probability
             ~ p(a|s) exp(lam ((1 - alpha) v_hat + alpha F_phi)), and new children are drawn from
             q instead of p. The rollout policy is explicit: with `rollout="q"` (default) each new
             node is rolled out with q to a terminal, as DTS does with p; with `rollout="flow"` a
             new node takes F_phi as its value instead, so a round costs one forward token per new
             node. Children keep the prior weight p(a|s) in backup and selection, as in DTS,
             whichever distribution proposed them. Final samples re-descend the tree with the same
             rule; below the tree's frontier (only with "flow") they are completed with q, and those
             tokens are counted too (they come after a --budget is spent), so every sample is a
             complete sequence whose reward was computed.
sadt-sample  draws from q directly: one forward token per generated token, no tree.
smc --potential flow   SMC (search/smc.py) twisted by F_phi: `flow_potential` hands it the flow.

F_phi(s.a) is predicted at s for every token a (terminal children: their reward), from the
prior's features of s: no forward pass beyond those the tree or the sampler make anyway.
"""

from __future__ import annotations

import numpy as np

from specdifftree.amortize.flow import Flow, load_flow
from specdifftree.errors import SDTError
from specdifftree.search.common import Problem, SearchConfig, SearchResult, Stopwatch, make_sample
from specdifftree.search.dts import (Search, backup, choose_soft, evaluate, grow, new_search, reward, rollout,
                                     samples_at, select)
from specdifftree.search.sampler import is_numpy, to_numpy
from specdifftree.search.sampling import ancestral, draw_within_budget
from specdifftree.search.tree import Tree

Q, P, F = 0, 1, 2  # row channels: log q(.|s) (drawn from), log p(.|s), F_phi(s.a) for every a
FLOW_FIELDS = {"flow": np.float64}  # [N] F_phi of a node as predicted at its parent (terminal: its reward)


def flow_rows(flow: Flow):
    """S-ADT's expansion proposal: the pool holds log q, log p and F_phi per evaluated node, each [B, V]."""

    def propose(s: Search, nodes: np.ndarray, handles: np.ndarray, logp) -> list:
        logp = logp if is_numpy(logp) else to_numpy(logp)
        log_q, child_flow = flow.evaluate(handles, [s.tree.tokens(n) for n in nodes.tolist()], logp)
        return [np.asarray(log_q, np.float32), logp, child_flow]

    return propose


def flow_child(s: Search, child: int) -> None:
    """A child drawn from q keeps log p(a|s) as its weight, and F_phi(s.a) as its parent predicts it."""
    t = s.tree
    slot, token = int(t.slot[t.parent[child]]), int(t.token[child])
    t.logp[child] = t.rows.value(slot, P, token)
    t.flow[child] = t.rows.value(slot, F, token)


def flow_leaf_value(tree: Tree, leaf: int):
    """What a backup starts from: the reward at a terminal (None), F_phi elsewhere."""
    return None if tree.terminal[leaf] else float(tree.flow[leaf])


def flow_rollout(s: Search, starts: np.ndarray) -> np.ndarray:
    """`--rollout flow`: no rollout. The new nodes [B] are evaluated (one forward token each, as one
    batch) so that later descents can pass them; F_phi is their value."""
    evaluate(s, starts)
    for n in starts[s.tree.terminal[starts]].tolist():
        reward(s, n)
    return starts


def hybrid_value(alpha: float):
    """S-ADT's selection value (1 - alpha) v_hat + alpha F_phi of children [K]."""
    return lambda tree, kids: (1 - alpha) * tree.value[kids] + alpha * tree.flow[kids]


def run_sadt(problem: Problem, cfg: SearchConfig, rng: np.random.Generator, progress=None) -> SearchResult:
    """`cfg.iterations` rounds of hybrid selection on a tree drawing from q, then `cfg.samples`
    re-descents completed with q."""
    if cfg.child_weight != "prior":
        raise SDTError("sadt weighs children by p(a|s) (they are drawn from q): use --child-weight prior")
    watch = Stopwatch(problem)
    flow = load_flow(cfg.flow, problem, cfg.lam, "--method sadt")
    s = new_search(problem, rng, propose=flow_rows(flow), on_child=flow_child, extra_fields=FLOW_FIELDS)
    choose = choose_soft(cfg.lam, "prior", hybrid_value(cfg.alpha))
    grow(s, cfg, choose, lambda tree, leaf: backup(tree, leaf, cfg.lam, "prior", flow_leaf_value(tree, leaf)),
         rollout_fn=rollout if cfg.rollout == "q" else flow_rollout, progress=progress)
    starts = np.array([select(s, choose, 0.0, 0.0) for _ in range(cfg.samples)])  # C = 0: no widening
    leaves = rollout(s, starts)  # every final sample completed with q
    return watch.result("sadt", samples_at(problem, s.tree, leaves), s.tree)


def run_sadt_sample(problem: Problem, cfg: SearchConfig, rng: np.random.Generator, progress=None) -> SearchResult:
    """`cfg.samples` draws from q as one batch (fewer if `--budget` runs out first); the prompt is
    prefilled once and every live sequence pays one forward token per step, as plain sampling does."""
    watch = Stopwatch(problem)
    flow = load_flow(cfg.flow, problem, cfg.lam, "--method sadt-sample")

    def draw(k: int):
        return ancestral(problem, k, rng, cfg.temperature, cfg.top_k, cfg.top_p, policy=flow.log_q)

    drawn = draw_within_budget(problem, cfg, draw)
    if progress is not None:
        progress(len(drawn))
    return watch.result("sadt-sample", [make_sample(problem, t, lp) for t, lp in drawn])


def flow_potential(problem: Problem, cfg: SearchConfig) -> Flow:
    """SMC's twist for `--potential flow` (registered in search/registry.POTENTIALS): the flow network."""
    return load_flow(cfg.flow, problem, cfg.lam, "--potential flow")

"""S-ADT: search amortized by a flow network (`sdt amortize`), two ways.

sadt         DTS on a `FlowTree`. Selection draws a child with probability
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
from specdifftree.search.dts import backup, grow, path_logp
from specdifftree.search.rows import is_numpy, to_numpy
from specdifftree.search.sampling import ancestral, draw_within_budget
from specdifftree.search.tree import Tree


class FlowTree(Tree):
    """A search tree whose draws come from q and whose nodes carry F_phi.

    The row pool holds three channels per evaluated node: log q(.|s) (what `draw` and `rollout`
    sample from), log p(.|s) and F_phi(s.a) for every a; each child's `logp` stays log p(a|s) (its
    weight in backup and selection). flow [N]: F_phi of a node as predicted at its parent (a
    terminal node: its reward). `rollout_policy`: "flow" or "q".
    """

    _FIELDS = {**Tree._FIELDS, "flow": np.float64}
    _Q, _P, _F = 0, 1, 2  # row channels

    def __init__(self, problem: Problem, flow, rollout_policy: str = "q"):
        self.flow_fn = flow  # amortize.flow.Flow
        self.rollout_policy = rollout_policy
        super().__init__(problem)

    def _channels(self, nodes: np.ndarray, handles: np.ndarray, logp) -> list:
        logp = logp if is_numpy(logp) else to_numpy(logp)
        log_q, child_flow = self.flow_fn.evaluate(handles, [self.tokens(n) for n in nodes.tolist()], logp)
        return [np.asarray(log_q, np.float32), logp, child_flow]

    def _new(self, parent: int, token: int, logp: float) -> int:
        if parent < 0:
            return super()._new(parent, token, logp)
        slot = int(self.slot[parent])
        n = super()._new(parent, token, self.rows.value(slot, self._P, token))
        self.flow[n] = self.rows.value(slot, self._F, token)
        return n

    def rollout(self, starts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """"q": DTS's rollout, drawing from q. "flow": no rollout: the new nodes are evaluated (one
        forward token each, as one batch) so that later descents can pass them; F_phi is their value."""
        if self.rollout_policy == "q":
            return super().rollout(starts, rng)
        self.evaluate(starts)
        for n in starts[self.terminal[starts]].tolist():
            self.leaf_reward(n)
        return starts

    def leaf_value(self, leaf: int):
        """What a backup starts from: the reward at a terminal (None), F_phi elsewhere."""
        return None if self.terminal[leaf] else float(self.flow[leaf])


def choose_hybrid(cfg: SearchConfig):
    """S-ADT selection: a child with probability ~ p(a|s) exp(lam ((1 - alpha) v_hat + alpha F_phi))."""

    def choose(tree: FlowTree, n: int, kids: np.ndarray, rng: np.random.Generator) -> int:
        v = (1 - cfg.alpha) * tree.value[kids] + cfg.alpha * tree.flow[kids]
        s = cfg.lam * v + tree.log_weight(kids, "prior")
        p = np.exp(s - s.max())
        return int(rng.choice(kids, p=p / p.sum()))

    return choose


def run_sadt(problem: Problem, cfg: SearchConfig, rng: np.random.Generator, progress=None) -> SearchResult:
    """`cfg.iterations` rounds of hybrid selection on a FlowTree, then `cfg.samples` re-descents
    completed with q."""
    if cfg.child_weight != "prior":
        raise SDTError("sadt weighs children by p(a|s) (they are drawn from q): use --child-weight prior")
    watch = Stopwatch(problem)
    tree = FlowTree(problem, load_flow(cfg.flow, problem, cfg.lam, "--method sadt"), cfg.rollout)
    choose = choose_hybrid(cfg)
    grow(tree, problem, cfg, rng, choose, lambda leaf: backup(tree, leaf, cfg.lam, "prior", tree.leaf_value(leaf)),
         progress)
    tree.rollout_policy = "q"  # complete every final sample
    starts = np.array([tree.descend(rng, 0.0, 0.0, choose) for _ in range(cfg.samples)])  # C = 0: no widening
    leaves = tree.rollout(starts, rng)
    unique = {n: make_sample(problem, tree.tokens(n), path_logp(tree, n)) for n in set(leaves.tolist())}
    return watch.result("sadt", [unique[n] for n in leaves.tolist()], tree)


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

"""Trajectory balance for the flow network, with detailed balance against the tree's values.

For a trajectory tau = (s_0, a_0, ..., s_T = x) of context c (backward policy 1 on a tree):

    TB(tau) = ( log Z_phi(c) + sum_t log q(a_t | s_t) - log p(x | c) - lam r(x) )^2

zero for every tau exactly when q = pi* and log Z_phi(c) = lam V(root). The optional value term
asks each predicted flow to match the search tree's soft value where the tree knows it:
lam F_phi(s_t.a_t) = lam v_tree(s_{t+1}) and log Z_phi(c) = lam v_tree(root).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """B trajectories flattened into S steps (shapes below); built by `amortize.data.make_batch`."""

    x: torch.Tensor  # [S, D] features of s_t
    logp: torch.Tensor  # [S, V] log p(. | s_t) (-inf where impossible)
    actions: torch.Tensor  # [S] a_t
    traj: torch.Tensor  # [S] the trajectory of each step
    term: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # terminal children: step [K], token [K], reward [K]
    root_x: torch.Tensor  # [B, D] features of each trajectory's s_0
    reward: torch.Tensor  # [B] r(x)
    next_value: torch.Tensor  # [S] v_tree(s_{t+1}), NaN where unknown
    root_value: torch.Tensor  # [B] v_tree(s_0), NaN where unknown


def policy(u: torch.Tensor, logp: torch.Tensor, term, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(log q [S, V], child values [S, V]): terminal children take their reward in place of F_phi."""
    rows, toks, rewards = term
    u = u.index_put((rows, toks), rewards.to(u.dtype))
    return torch.log_softmax(logp + lam * u, dim=-1), u


def loss_sums(net, b: Batch, lam: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum of TB over the trajectories, sum of squared value mismatches where the tree knows the
    value, sum of log Z): the terms `flow_loss` averages, summed, so ranks can share a batch."""
    log_q, u = policy(net(b.x), b.logp, b.term, lam)
    pick = b.actions[:, None]
    per_traj = torch.zeros_like(b.reward)
    log_q_tau = per_traj.index_add(0, b.traj, log_q.gather(1, pick)[:, 0])  # [B] sum_t log q(a_t|s_t)
    log_p_x = per_traj.index_add(0, b.traj, b.logp.gather(1, pick)[:, 0])  # [B] log p(x|c)
    log_z = net.log_z(b.root_x)  # [B]
    tb = (log_z + log_q_tau - log_p_x - lam * b.reward).pow(2).sum()
    pred = torch.cat([lam * u.gather(1, pick)[:, 0], log_z])
    target = torch.cat([lam * b.next_value, lam * b.root_value])
    known = torch.isfinite(target)
    return tb, (pred - target)[known].pow(2).sum(), log_z.sum()


def known_values(b: Batch) -> int:
    """How many value targets the tree gives in the batch (the value term's denominator)."""
    return int(torch.isfinite(b.next_value).sum() + torch.isfinite(b.root_value).sum())


def combine(tb_sum, value_sum, n_traj: int, n_known: int, value_weight: float):
    """Mean TB plus `value_weight` x mean squared value mismatch (0 when no value is known)."""
    value = value_sum / n_known if n_known else value_sum * 0.0
    return tb_sum / n_traj + value_weight * value, value


def flow_loss(net, b: Batch, lam: float, value_weight: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Mean TB over the batch, plus `value_weight` x mean squared value mismatch. Returns (loss, parts)."""
    tb_sum, value_sum, log_z_sum = loss_sums(net, b, lam)
    n = len(b.reward)
    loss, value = combine(tb_sum, value_sum, n, known_values(b), value_weight)
    return loss, {"tb": tb_sum.item() / n, "value": float(value), "log_z": log_z_sum.item() / n}

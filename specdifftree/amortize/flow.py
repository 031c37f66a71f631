"""The flow network F_phi and the amortized policy q it defines (S-ADT, DESIGN.md section 6).

With R(x) = p(x|c) exp(lam r(x)) the flow through a prefix is log F(s) = log p(s|c) + lam V(s),
so a network predicting the soft value V defines the policy

    q(a | s)  =  p(a | s) exp(lam (F_phi(s.a) - F_phi(s)))
    F_phi(s)  =  (1/lam) log sum_a p(a | s) exp(lam F_phi(s.a))        (soft Bellman: q sums to one)

A child's value F_phi(s.a) is predicted from the features of s, for every token a at once (a
head of width V), so drawing from q costs one forward token per generated token; a terminal
child (EOS, or the length limit reached) takes its reward instead, as in the tree. A separate
head gives log Z_phi(c) from the root's features (trajectory balance trains it towards
lam V(root)).

    net = FlowNet(feature_dim, vocab_size)
    flow = Flow(net, problem, lam)
    log_q = flow.log_q(handles, prefixes, logp)        # [B, V] rows that sum to one
    save_flow(dir, net, meta); net, meta = load_flow_checkpoint(dir)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from specdifftree.errors import SDTError
from specdifftree.search.common import Problem

KIND = "sdt-flow"


class FlowNet(nn.Module):
    """F_phi(s.a) for every next token a [B, V], and log Z_phi(c) [B], from prior features [B, D].

    Both are small MLPs on LayerNorm'd features. The value head starts at `init_value` for every
    token (its last layer zero), so the initial q is the prior tilted only at terminal children.
    """

    def __init__(self, feature_dim: int, vocab_size: int, hidden: int = 256, init_value: float = 0.0):
        super().__init__()
        self.feature_dim, self.vocab_size, self.hidden = int(feature_dim), int(vocab_size), int(hidden)
        self.values = nn.Sequential(nn.LayerNorm(feature_dim), nn.Linear(feature_dim, hidden), nn.GELU(),
                                    nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, vocab_size))
        self.log_z_head = nn.Sequential(nn.LayerNorm(feature_dim), nn.Linear(feature_dim, hidden), nn.GELU(),
                                        nn.Linear(hidden, 1))
        nn.init.zeros_(self.values[-1].weight)
        nn.init.constant_(self.values[-1].bias, float(init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, D] features of prefixes s -> [B, V] F_phi(s.a) for every token a."""
        return self.values(x)

    def log_z(self, root_x: torch.Tensor) -> torch.Tensor:
        """root_x [B, D] features of the empty prefix of each context -> [B] log Z_phi(c)."""
        return self.log_z_head(root_x)[:, 0]


def terminal_children(problem: Problem, prefixes: list[list[int]], logp: np.ndarray):
    """The children of each prefix that are terminal and possible, with their rewards.

    EOS ends a sequence; at depth max_len - 1 every token does. Returns (rows [K], tokens [K],
    rewards [K]) over the children with finite log p (rewards are cached by the problem).
    """
    prior = problem.prior
    rows, toks, rewards = [], [], []
    for i, p in enumerate(prefixes):
        last = len(p) + 1 >= prior.max_len
        for a in (np.flatnonzero(np.isfinite(logp[i])) if last else [prior.eos_id]):
            if np.isfinite(logp[i, a]):
                rows.append(i)
                toks.append(int(a))
                rewards.append(problem.score(list(p) if a == prior.eos_id else list(p) + [int(a)]))
    return np.array(rows, np.int64), np.array(toks, np.int64), np.array(rewards, np.float64)


class Flow:
    """A flow network bound to one problem: F_phi at the children of evaluated prefixes, and q.

    Features come from `problem.prior.features` (no forward pass), so using the flow adds no
    forward tokens to what the search pays for its prefixes. With `store` (an
    `amortize.data.PrefixStore`), every prefix's features and log-probs are also kept there.
    """

    def __init__(self, net: FlowNet, problem: Problem, lam: float, store=None):
        self.net, self.problem, self.lam, self.store = net, problem, float(lam), store

    def evaluate(self, handles: np.ndarray, prefixes: list[list[int]], logp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log q(.|s) [B, V], F_phi(s.a) for every token a [B, V], terminal children: their reward).

        handles [B] evaluated prefixes s, prefixes their tokens, logp [B, V] log p(.|s)."""
        from specdifftree.amortize.losses import policy

        prefixes = [list(p) for p in prefixes]
        x = self.problem.prior.features(np.asarray(handles), prefixes)
        if x.shape[1] != self.net.feature_dim:
            raise SDTError(f"the flow network reads {self.net.feature_dim} features, this prior gives {x.shape[1]}; "
                           "train a flow for this prior with `sdt amortize`")
        if self.store is not None:
            self.store.add(prefixes, x, logp)
        term = [torch.as_tensor(a) for a in terminal_children(self.problem, prefixes, logp)]
        with torch.inference_mode():
            u = self.net(torch.as_tensor(x, dtype=torch.float32)).double()
            log_q, u = policy(u, torch.as_tensor(np.asarray(logp, np.float64)), term, self.lam)
        return log_q.numpy(), u.numpy()

    def log_q(self, handles: np.ndarray, prefixes: list[list[int]], logp: np.ndarray) -> np.ndarray:
        """log q(.|s) [B, V] = log_softmax(log p(.|s) + lam F_phi(s.)), -inf where p is 0: a proposal."""
        return self.evaluate(handles, prefixes, logp)[0]


# ------------------------------------------------------------------------------------------- checkpoints


@dataclass
class FlowMeta:
    """What a flow network was trained for; search refuses it for anything else."""

    prior: str  # the --prior spec it was trained with (informative)
    prior_weights_sha256: str  # the prior's Prior.weights_sha256() (decides)
    vocab_size: int
    reward: list[str]  # the --reward specs as given (compared as `reward_spec` normalises them)
    lam: float
    feature_dim: int
    hidden: int
    training: dict  # config and final metrics of `sdt amortize`


def save_flow(directory: str | Path, net: FlowNet, meta: FlowMeta) -> Path:
    """Safetensors + JSON (config.json records the prior, vocabulary, reward and lambda), atomically."""
    from dataclasses import asdict

    from specdifftree.prior.checkpoint import save_checkpoint

    return save_checkpoint(directory, {"flow": net}, {"kind": KIND, **asdict(meta)})


def load_flow_checkpoint(directory: str | Path) -> tuple[FlowNet, FlowMeta]:
    """The network (eval mode) and what it was trained for, or SDTError (missing, corrupt, not a flow)."""
    from specdifftree.prior.checkpoint import load_checkpoint

    state, config = load_checkpoint(directory)
    if config.get("kind") != KIND:
        raise SDTError(f"{directory} is not a flow checkpoint (write one with `sdt amortize --out DIR`)")
    if "prior_weights_sha256" not in config and "fingerprint" in config:
        raise SDTError(f"the flow in {directory} names its prior by the fingerprint older versions used, not by its "
                       "weights' sha256; train it again with `sdt amortize`")
    try:
        meta = FlowMeta(**{k: config[k] for k in FlowMeta.__dataclass_fields__})
        net = FlowNet(meta.feature_dim, meta.vocab_size, meta.hidden)
        net.load_state_dict(state.get("flow", {}), strict=True)
    except (KeyError, TypeError, RuntimeError) as e:
        raise SDTError(f"{directory}: flow checkpoint does not match its config ({str(e).splitlines()[0][:100]})") from None
    return net.eval(), meta


def load_flow(directory: Optional[str], problem: Problem, lam: float, method: str = "this method") -> Flow:
    """The flow in `directory` bound to `problem`, refused (SDTError, one line) when it was trained
    for another prior (weights sha256), vocabulary, reward (`problem.reward`'s spec) or lambda."""
    from specdifftree import validate
    from specdifftree.rewards import reward_spec

    validate.flow_dir(directory, method)
    net, meta = load_flow_checkpoint(directory)
    prior, sha = problem.prior, problem.prior.weights_sha256()
    trained = reward_spec(meta.reward)
    given = getattr(problem.reward, "spec", "")  # parse_reward's; "" for a built-in problem's own reward
    why = None
    if meta.vocab_size != prior.vocab_size:
        why = f"a vocabulary of {meta.vocab_size} tokens, this prior has {prior.vocab_size}"
    elif meta.prior_weights_sha256 != sha:
        why = (f"another prior ('{meta.prior}', weights sha256 {meta.prior_weights_sha256[:16]}...; this one's is "
               f"{sha[:16]}...)")
    elif trained != given:
        why = (f"the reward '{trained or '(built-in)'}', not '{given or '(built-in)'}' (pass the same --reward)")
    elif not np.isclose(meta.lam, lam, rtol=1e-12, atol=0):
        why = f"lambda {meta.lam} (this search uses {lam}; pass --lambda {meta.lam})"
    if why:
        raise SDTError(f"the flow in {directory} was trained for {why}; train one for this setting with `sdt amortize`")
    return Flow(net, problem, lam)

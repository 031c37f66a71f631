"""Training the flow network: trajectory balance on buffer, on-policy and replayed trajectories.

Each step's batch mixes trajectories from the search buffers (with the trees' values as
detailed-balance targets), fresh draws from q at a temperature drawn from U[0.5, 2] (on one
training context), and replays of the best on-policy draws so far (Hu et al. 2024's recipe).
Every `eval_every` steps the losses on held-out contexts are measured and the network is saved
(safetensors + JSON) when they improved.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from specdifftree.errors import SDTError

TEMPERATURES = (0.5, 2.0)  # on-policy exploration: q tempered by T ~ U[0.5, 2]


@dataclass
class AmortizeConfig:
    """Options of `sdt amortize` (defaults here, YAML over them, command line over both)."""

    steps: int = 1000
    batch_size: int = 16  # trajectories per step
    lr: float = 1e-3  # the value head
    lr_log_z: float = 1e-2  # the log Z head (its own, larger rate, as torchgfn does)
    hidden: int = 256
    on_policy: float = 0.25  # share of a batch drawn from q
    replay: float = 0.25  # share replayed from the best on-policy draws so far
    replay_size: int = 256
    value_weight: float = 0.1  # detailed balance against the trees' soft values (0: trajectory balance only)
    min_visits: int = 1  # tree values backed by fewer visits are not used as targets
    max_per_context: int = 256  # buffer trajectories used per context, the most visited leaves first
    val_fraction: float = 0.2  # share of contexts held out for validation
    eval_every: int = 100
    val_samples: int = 8  # draws from q per validation context (their mean reward is logged)
    grad_clip: float = 10.0
    seed: int = 0

    def validate(self) -> "AmortizeConfig":
        checks = [
            (self.steps >= 1 and self.batch_size >= 1 and self.eval_every >= 1, "--steps, --batch-size must be >= 1"),
            (self.lr > 0 and self.lr_log_z > 0, "--lr must be > 0"),
            (self.hidden >= 1, "--hidden must be >= 1"),
            (0 <= self.on_policy and 0 <= self.replay and self.on_policy + self.replay <= 1,
             "on-policy and replay shares must be >= 0 and sum to at most 1"),
            (self.value_weight >= 0, "--value-weight must be >= 0"),
            (0 <= self.val_fraction < 1, "--val-fraction must be in [0, 1)"),
            (self.max_per_context >= 1 and self.replay_size >= 1 and self.val_samples >= 0, "counts must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise SDTError(msg)
        return self


def split_contexts(n: int, fraction: float, rng: np.random.Generator) -> tuple[list[int], list[int], bool]:
    """(train ids, validation ids, held_out). With one context it validates on it (held_out False)."""
    if n < 2 or fraction == 0:
        return list(range(n)), list(range(n)), False
    order = rng.permutation(n).tolist()
    k = min(n - 1, max(1, round(fraction * n)))
    return sorted(order[k:]), sorted(order[:k]), True


def fit_flow(problems: list, records: list[list], lam: float, cfg: AmortizeConfig, out_dir: str | Path, meta: dict,
        progress: bool = False, tracker=None) -> dict:
    """Train a flow network on `problems` (one per context) and their buffer `records`; save the best
    (by validation trajectory balance) in `out_dir`. `meta`: prior, fingerprint, reward (for FlowMeta).
    Returns the summary of the run."""
    import torch
    from tqdm.auto import tqdm

    from specdifftree.amortize.data import PrefixStore, buffer_trajectories, make_batch, sample_trajectories
    from specdifftree.amortize.flow import FlowMeta, FlowNet, save_flow
    from specdifftree.amortize.losses import flow_loss

    cfg.validate()
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    train_ids, val_ids, held_out = split_contexts(len(problems), cfg.val_fraction, rng)
    costs = list({id(p.prior.cost): p.prior.cost for p in problems}.values())  # contexts may share a backbone
    tokens_before = sum(c.forward_tokens for c in costs)
    data = {c: buffer_trajectories(problems[c], c, PrefixStore(), records[c], cfg.max_per_context, cfg.min_visits, rng)
            for c in sorted(set(train_ids) | set(val_ids))}
    walk_tokens = sum(c.forward_tokens for c in costs) - tokens_before
    train = [t for c in train_ids for t in data[c]]
    val = [t for c in val_ids for t in data[c]]
    if not train:
        raise SDTError("the buffers hold no trajectories to train on")
    net = FlowNet(train[0].store.x.shape[1], problems[0].prior.vocab_size, cfg.hidden,
                  init_value=float(np.mean([t.reward for t in train])))
    opt = torch.optim.Adam([{"params": net.values.parameters(), "lr": cfg.lr},
                            {"params": net.log_z_head.parameters(), "lr": cfg.lr_log_z}])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 + 0.45 * (1 + math.cos(math.pi * s / cfg.steps)))
    n_on = round(cfg.on_policy * cfg.batch_size)
    n_replay = round(cfg.replay * cfg.batch_size)
    replay: list = []
    best = {"val/tb": math.inf}
    bar = tqdm(range(1, cfg.steps + 1), desc="amortize", disable=None if progress else True, leave=False)
    for step in bar:
        k_replay = min(n_replay, len(replay))
        batch = [train[i] for i in rng.integers(len(train), size=cfg.batch_size - n_on - k_replay)]
        batch += [replay[i] for i in rng.integers(len(replay), size=k_replay)]
        if n_on:
            c = int(rng.choice(train_ids))
            fresh = sample_trajectories(problems[c], c, net, lam, n_on, rng, float(rng.uniform(*TEMPERATURES)))
            batch += fresh
            replay = sorted(replay + fresh, key=lambda t: -t.reward)[: cfg.replay_size]
        loss, parts = flow_loss(net, make_batch(batch), lam, cfg.value_weight)
        if not torch.isfinite(loss):
            raise SDTError(f"training diverged at step {step} (loss {float(loss)}); try a smaller --lr")
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        bar.set_postfix(tb=f"{parts['tb']:.3g}")
        if tracker is not None and (step % 10 == 0 or step == cfg.steps):
            tracker.log({f"train/{k}": v for k, v in parts.items()} | {"train/loss": loss.item()}, step=step)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            metrics = validate(net, problems, val_ids, val, lam, cfg, rng)
            if tracker is not None:
                tracker.log(metrics, step=step)
            if metrics["val/tb"] <= best["val/tb"]:
                best = {**metrics, "step": step}
                training = {"config": asdict(cfg), "best": best, "held_out_validation": held_out,
                            "train_contexts": len(train_ids), "val_contexts": len(val_ids)}
                save_flow(out_dir, net, FlowMeta(vocab_size=problems[0].prior.vocab_size, lam=float(lam),
                                                 feature_dim=net.feature_dim, hidden=net.hidden,
                                                 training=training, **meta))
    return {"checkpoint": str(out_dir), "best_step": best["step"], **best, "held_out_validation": held_out,
            "train_contexts": len(train_ids), "val_contexts": len(val_ids), "train_trajectories": len(train),
            "val_trajectories": len(val), "walk_forward_tokens": int(walk_tokens), "wall_s": time.perf_counter() - t0}


def validate(net, problems: list, val_ids: list[int], val: list, lam: float, cfg: AmortizeConfig,
             rng: np.random.Generator, chunk: int = 64) -> dict:
    """Losses on the validation trajectories, and the mean reward of `cfg.val_samples` draws from q per
    validation context."""
    import torch

    from specdifftree.amortize.data import make_batch, sample_trajectories
    from specdifftree.amortize.losses import flow_loss

    totals = {"tb": 0.0, "value": 0.0}
    with torch.no_grad():
        for i in range(0, len(val), chunk):
            part = val[i: i + chunk]
            _, parts = flow_loss(net, make_batch(part), lam, cfg.value_weight)
            for k in totals:
                totals[k] += parts[k] * len(part)
    out = {f"val/{k}": v / max(len(val), 1) for k, v in totals.items()}
    if cfg.val_samples:
        draws = [t for c in val_ids for t in sample_trajectories(problems[c], c, net, lam, cfg.val_samples, rng)]
        out["val/reward_q"] = float(np.mean([t.reward for t in draws]))
    return out

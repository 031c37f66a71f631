"""Training the flow network: trajectory balance on buffer, on-policy and replayed trajectories.

Each step's batch mixes trajectories from the search buffers (with the trees' values as
detailed-balance targets), fresh draws from q at a temperature drawn from U[0.5, 2] (on one
training context), and replays of the best on-policy draws so far (Hu et al. 2024's recipe).
Every `eval_every` steps the losses on held-out contexts are measured and the network is saved
(safetensors + JSON) when they improved. Every `save_every` steps the loop commits its resume
state (OUT/state.safetensors, with train-prior's atomic state file): a run killed at any moment
continues with --resume from the last commit and ends with the same checkpoint bytes, because
everything random comes from one numpy generator whose state is in that file.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from specdifftree.errors import SDTError
from specdifftree.files import jsonable
from specdifftree.train.state import STATE

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
    save_every: int = 10  # steps between commits of the resume state (OUT/state.safetensors)

    def validate(self) -> "AmortizeConfig":
        checks = [
            (self.steps >= 1 and self.batch_size >= 1 and self.eval_every >= 1 and self.save_every >= 1,
             "--steps, --batch-size, --eval-every, --save-every must be >= 1"),
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


@dataclass
class Loop:
    """What a committed step of `fit_flow` keeps besides the network and optimizer."""

    step: int = 0  # steps taken
    replay: list = field(default_factory=list)  # the best on-policy trajectories so far, best first
    best: dict = field(default_factory=lambda: {"val/tb": math.inf})


def fit_flow(problems: list, records: list[list], lam: float, cfg: AmortizeConfig, out_dir: str | Path, meta: dict,
             progress: bool = False, tracker=None, resume: bool = False, dist=None, inputs: dict | None = None) -> dict:
    """Train a flow network on `problems` (one per context) and their buffer `records`; save the best
    (by validation trajectory balance) in `out_dir`. `meta`: prior, prior_weights_sha256, reward (for FlowMeta).
    Every `cfg.save_every` steps the whole loop is committed to OUT/state.safetensors (one atomic
    file, train/state.py); `resume` continues from it, to the same bytes as an uninterrupted run,
    when it was written by the same run (options, prior, reward, lambda and `inputs`, e.g. the
    buffers' sha256).
    `dist` (train/distributed.py): under torchrun each rank computes the loss of its share of every
    batch; rank 0 alone writes. Returns the summary of the run. torch's global random stream is
    seeded with `cfg.seed` for the run and is the caller's again afterwards."""
    from specdifftree.machine import seeded

    with seeded(cfg.seed):
        return _fit_flow(problems, records, lam, cfg, out_dir, meta, progress, tracker, resume, dist, inputs)


def _fit_flow(problems, records, lam, cfg, out_dir, meta, progress, tracker, resume, dist, inputs) -> dict:
    import torch

    from specdifftree.amortize.data import PrefixStore, buffer_trajectories, make_batch, sample_trajectories
    from specdifftree.amortize.flow import FlowMeta, FlowNet, save_flow
    from specdifftree.amortize.losses import known_values
    from specdifftree.progress import progress as progress_bar
    from specdifftree.train.distributed import Dist

    cfg.validate()
    dist = dist or Dist()
    t0 = time.perf_counter()
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
    state = Path(out_dir) / STATE
    run_id = {"config": asdict(cfg), "lam": float(lam), **meta, "contexts": len(problems), "trajectories": len(train),
              "inputs": inputs or {}}
    loop = Loop()
    if resume and state.is_file():
        loop = restore_loop(state, run_id, net, opt, sched, rng)
    elif dist.is_main:
        state.unlink(missing_ok=True)  # another run's state: this one starts afresh
    step_loss = dist.wrap({"flow": net}, lambda batch, n, k: shard_loss(net, batch, lam, cfg.value_weight, n, k, dist))
    n_on = round(cfg.on_policy * cfg.batch_size)
    n_replay = round(cfg.replay * cfg.batch_size)
    bar = progress_bar(cfg.steps, "amortize", "steps", initial=loop.step, enabled=progress and dist.is_main)
    for step in range(loop.step + 1, cfg.steps + 1):
        k_replay = min(n_replay, len(loop.replay))
        batch = [train[i] for i in rng.integers(len(train), size=cfg.batch_size - n_on - k_replay)]
        batch += [loop.replay[i] for i in rng.integers(len(loop.replay), size=k_replay)]
        if n_on:
            c = int(rng.choice(train_ids))
            fresh = sample_trajectories(problems[c], c, net, lam, n_on, rng, float(rng.uniform(*TEMPERATURES)))
            batch += fresh
            loop.replay = sorted(loop.replay + fresh, key=lambda t: -t.reward)[: cfg.replay_size]
        whole = make_batch(batch)
        loss, parts = step_loss(batch[dist.rank::dist.world], len(batch), known_values(whole))
        if not torch.isfinite(loss):
            raise SDTError(f"training diverged at step {step} (loss {float(loss)}); try a smaller --lr")
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        loop.step = step
        bar.set_postfix(tb=f"{parts['tb']:.3g}")
        if tracker is not None and (step % 10 == 0 or step == cfg.steps):
            tracker.log({f"train/{k}": v for k, v in parts.items()} | {"train/loss": parts["loss"]}, step=step)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            metrics = validate(net, problems, val_ids, val, lam, cfg, rng)
            if tracker is not None:
                tracker.log(metrics, step=step)
            if metrics["val/tb"] <= loop.best["val/tb"]:
                loop.best = {**metrics, "step": step}
                training = {"config": asdict(cfg), "best": loop.best, "held_out_validation": held_out,
                            "train_contexts": len(train_ids), "val_contexts": len(val_ids)}
                if dist.is_main:
                    save_flow(out_dir, net, FlowMeta(vocab_size=problems[0].prior.vocab_size, lam=float(lam),
                                                     feature_dim=net.feature_dim, hidden=net.hidden,
                                                     training=training, **meta))
        if dist.is_main and (step % cfg.save_every == 0 or step == cfg.steps):
            commit_loop(state, run_id, net, opt, sched, rng, loop)  # the step's commit point
        bar.update(1)
    bar.close()
    best = loop.best
    return {"checkpoint": str(out_dir), "best_step": best["step"], **best, "held_out_validation": held_out,
            "train_contexts": len(train_ids), "val_contexts": len(val_ids), "train_trajectories": len(train),
            "val_trajectories": len(val), "walk_forward_tokens": int(walk_tokens), "wall_s": time.perf_counter() - t0}


def shard_loss(net, trajs: list, lam: float, value_weight: float, n_traj: int, n_known: int, dist):
    """The loss of this rank's trajectories of a batch of `n_traj` (`n_known` value targets in all),
    scaled so that the ranks' gradients average to the whole batch's; and the whole batch's parts."""
    import torch

    from specdifftree.amortize.data import make_batch
    from specdifftree.amortize.losses import combine, loss_sums
    from specdifftree.train.distributed import zero_loss

    if trajs:
        tb_sum, value_sum, log_z_sum = loss_sums(net, make_batch(trajs), lam)
    else:
        tb_sum = value_sum = zero_loss({"flow": net})
        log_z_sum = torch.zeros(())
    loss, _ = combine(tb_sum, value_sum, n_traj, n_known, value_weight)
    tb, value, log_z = dist.sum([tb_sum.item(), value_sum.item(), log_z_sum.item()])
    total, value = combine(tb, value, n_traj, n_known, value_weight)
    return loss * dist.world, {"tb": tb / n_traj, "value": float(value), "log_z": log_z / n_traj, "loss": float(total)}


# ------------------------------------------------------------------------------------------- resume state


def commit_loop(path: Path, run_id: dict, net, opt, sched, rng: np.random.Generator, loop: Loop) -> None:
    """Network, optimizer, schedule, random states, replay buffer and best so far: one atomic file."""
    import torch

    from specdifftree.train.state import optimizer_tensors, save_state

    opt_tensors, groups = optimizer_tensors(opt)
    replay, lengths = traj_tensors(loop.replay)
    tensors = {**{f"net.{k}": v for k, v in net.state_dict().items()}, **opt_tensors, **replay,
               "torch_rng": torch.get_rng_state()}
    meta = {"run": run_id, "step": loop.step, "best": loop.best, "param_groups": groups, "sched": sched.state_dict(),
            "rng": rng.bit_generator.state, "replay": lengths}
    save_state(path, tensors, meta)


def restore_loop(path: Path, run_id: dict, net, opt, sched, rng: np.random.Generator) -> Loop:
    """The loop as `commit_loop` left it (SDTError when the state is another run's)."""
    import torch

    from specdifftree.train.state import load_state, restore_optimizer

    tensors, meta = load_state(path)
    if meta["run"] != json.loads(json.dumps(jsonable(run_id))):
        raise SDTError(f"{path} is the state of another amortize run (buffers, prior, reward, lambda or options "
                       "differ); drop --resume to start afresh, or use another --out")
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    restore_optimizer(opt, tensors, meta["param_groups"])
    sched.load_state_dict(meta["sched"])
    rng.bit_generator.state = meta["rng"]
    torch.set_rng_state(tensors["torch_rng"])
    best = {k: (math.inf if v is None else v) for k, v in meta["best"].items()}
    return Loop(meta["step"], traj_list(tensors, meta["replay"]), best)


REPLAY = ("x", "logp", "actions", "next_value", "term_rows", "term_tokens", "term_rewards")


def traj_tensors(trajs: list) -> tuple[dict, dict]:
    """Trajectories as flat tensors {"replay.<field>"} and their lengths (for `traj_list`)."""
    import torch

    if not trajs:
        return {}, {"steps": [], "terms": [], "ctx": [], "reward": [], "root_value": []}
    cat = lambda arrays: torch.from_numpy(np.ascontiguousarray(np.concatenate(arrays)))  # noqa: E731
    tensors = {"replay.x": cat([t.store.x[t.rows] for t in trajs]), "replay.logp": cat([t.store.logp[t.rows] for t in trajs]),
               "replay.actions": cat([t.actions for t in trajs]), "replay.next_value": cat([t.next_value for t in trajs])}
    for k, name in enumerate(("rows", "tokens", "rewards")):
        tensors[f"replay.term_{name}"] = cat([t.term[k] for t in trajs])
    lengths = {"steps": [len(t.actions) for t in trajs], "terms": [len(t.term[0]) for t in trajs],
               "ctx": [t.ctx for t in trajs], "reward": [t.reward for t in trajs],
               "root_value": [t.root_value for t in trajs]}
    return tensors, lengths


def traj_list(tensors: dict, lengths: dict) -> list:
    """The trajectories `traj_tensors` flattened, each with a store of its own prefixes."""
    from specdifftree.amortize.data import PrefixStore, Traj

    if not lengths["steps"]:
        return []
    a = {k: tensors[f"replay.{k}"].numpy() for k in REPLAY}
    split = lambda arr, sizes: np.split(arr, np.cumsum(sizes)[:-1])  # noqa: E731
    steps, terms = lengths["steps"], lengths["terms"]
    out = []
    for i, (x, logp, actions, nv, rows, toks, rewards) in enumerate(zip(
            *(split(a[k], steps) for k in ("x", "logp", "actions", "next_value")),
            *(split(a[k], terms) for k in ("term_rows", "term_tokens", "term_rewards")))):
        store = PrefixStore()
        store.x, store.logp = x.copy(), logp.copy()
        out.append(Traj(lengths["ctx"][i], store, np.arange(len(actions)), actions.copy(), (rows, toks, rewards),
                        float(lengths["reward"][i]), nv.copy(),
                        math.nan if lengths["root_value"][i] is None else float(lengths["root_value"][i])))
    return out


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

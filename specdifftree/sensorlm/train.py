"""Training the two towers (`sdt sensorlm train`): SigLIP on (window, caption) pairs.

    cfg = SensorLMTrainConfig.from_name("smoke")        # configs/sensorlm/smoke.yaml over the defaults
    train_sensorlm(cfg, Path("runs/slm"), resume=False, wandb=True)

The run directory holds the model (checkpoint.py's files), `state.safetensors` (the resume state:
weights, AdamW moments and the metrics rows, one atomic file written after every epoch),
`metrics.csv`, `loss.png`, `recall.png` and `tracking.jsonl` (W&B offline under `wandb/`).
Deterministic: the model is initialised under `seeded(seed)`, each epoch draws its order and each
window's caption variant from (seed, epoch), and torch runs on `threads` intra-op threads with
deterministic algorithms; so a run killed at any moment and resumed ends with the weights of an
uninterrupted one.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np

from specdifftree.errors import SDTError
from specdifftree.sensorlm.config import SensorLMConfig
from specdifftree.sensorlm.pairs import PairSpec, Pairs

STATE = "state.safetensors"
COLUMNS = ("epoch", "step", "train_loss", "val_loss", "val_r1_s2t", "val_r5_s2t", "val_r1_t2s", "val_r5_t2s",
           "scale", "bias", "seconds")


@dataclass
class SensorLMTrainConfig:
    """A training run: the towers, the pairs, the optimiser. Presets: configs/sensorlm/NAME.yaml."""

    model: SensorLMConfig = field(default_factory=SensorLMConfig)
    data: PairSpec = field(default_factory=PairSpec)
    data_dir: Optional[str] = None  # shared/data's layout (None: the default data directory)
    epochs: int = 8
    batch_size: int = 64
    lr: float = 2.0e-3
    scalar_lr: float = 0.05  # the learning rate of log t and b (no weight decay): from t = 10, b = -10 to a
    # small batch's balance (b near -log B) in tens of steps, not thousands
    weight_decay: float = 0.01
    warmup: int = 20  # steps of linear warm-up, then cosine decay to 10%
    vocab: int = 1024  # the tokenizer's target vocabulary
    threads: int = 2
    seed: int = 0

    @classmethod
    def from_name(cls, name: str, overrides: Optional[dict] = None) -> "SensorLMTrainConfig":
        from specdifftree.config import build, load_preset

        return build(cls, load_preset("sensorlm", name), overrides, where=f"sensorlm preset '{name}'")


def data_root(cfg: SensorLMTrainConfig) -> Path:
    from specdifftree.paths import default_data_dir

    root = Path(cfg.data_dir) if cfg.data_dir else default_data_dir()
    if root is None or not root.is_dir():
        raise SDTError(f"no data directory ({cfg.data_dir or 'shared/data or the download cache'}); "
                       "run `sdt data download` or set data_dir")
    return root


def lr_at(cfg: SensorLMTrainConfig, step: int, total: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, total - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def optimizer(model, cfg: SensorLMTrainConfig):
    """AdamW: the towers at lr with weight decay, then log t and b at scalar_lr without."""
    import torch

    scalars = [model.log_scale, model.bias]
    towers = [p for p in model.parameters() if all(p is not s for s in scalars)]
    return torch.optim.AdamW([{"params": towers, "weight_decay": cfg.weight_decay},
                              {"params": scalars, "weight_decay": 0.0, "lr": cfg.scalar_lr}], lr=cfg.lr)


@dataclass
class Prepared:
    """A split's pairs ready for the towers: series tensors, every variant's token ids."""

    pairs: Pairs
    series: object  # SeriesBatch
    variants: list  # per window: [variant names]
    ids: dict  # (window, variant) -> [token ids]


def prepare(pairs: Pairs, tok, cfg: SensorLMConfig) -> Prepared:
    from specdifftree.sensorlm.inputs import series_batch

    keys = [(i, v) for i, d in enumerate(pairs.texts) for v in d]
    enc = tok.encode_batch([pairs.texts[i][v] for i, v in keys])
    ids = {k: (e.ids[:cfg.text_len] or [1]) for k, e in zip(keys, enc)}
    return Prepared(pairs, series_batch(pairs.windows, cfg), [list(d) for d in pairs.texts], ids)


def batch_ids(p: Prepared, idx: np.ndarray, variant_pick: np.ndarray):
    """Token ids and mask [B, T] of windows idx, window idx[k] at the variant variant_pick[k] indexes."""
    import torch

    rows = [p.ids[(int(i), p.variants[int(i)][int(v) % len(p.variants[int(i)])])] for i, v in zip(idx, variant_pick)]
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for k, r in enumerate(rows):
        ids[k, :len(r)] = torch.tensor(r)
        mask[k, :len(r)] = True
    return ids, mask


def validate(model, p: Prepared, batch_size: int, seed: int) -> dict:
    """Validation loss (fixed batches, a fixed variant per window) and recall@1/@5 both ways."""
    import torch

    from specdifftree.sensorlm.evaluate import recall_at_k
    from specdifftree.sensorlm.model import siglip_loss

    pick = np.random.default_rng([seed, 7]).integers(0, 1 << 20, len(p.pairs))
    model.eval()
    zs, zt, losses = [], [], []
    with torch.no_grad():
        for a in range(0, len(p.pairs), batch_size):
            idx = np.arange(a, min(a + batch_size, len(p.pairs)))
            s = model.encode_series(*[torch.from_numpy(t) for t in (p.series.take(idx).patches,
                                                                    p.series.take(idx).stats, p.series.take(idx).mask)])
            t = model.encode_text(*batch_ids(p, idx, pick[idx]))
            losses.append(float(siglip_loss(s, t, model.log_scale, model.bias)) * len(idx))
            zs.append(s)
            zt.append(t)
    model.train()
    sim = (torch.cat(zs) @ torch.cat(zt).T).numpy()
    return {"val_loss": sum(losses) / len(p.pairs), "val_r1_s2t": recall_at_k(sim, 1), "val_r5_s2t": recall_at_k(sim, 5),
            "val_r1_t2s": recall_at_k(sim.T, 1), "val_r5_t2s": recall_at_k(sim.T, 5)}


def train_epoch(model, opt, p: Prepared, cfg: SensorLMTrainConfig, epoch: int, step: int, total: int, bar) -> tuple[float, int]:
    """One pass over the training pairs in the epoch's order; -> (mean loss, step after it)."""
    import torch

    from specdifftree.sensorlm.model import siglip_loss

    rng = np.random.default_rng([cfg.seed, epoch])
    order, pick = rng.permutation(len(p.pairs)), rng.integers(0, 1 << 20, len(p.pairs))
    losses = []
    for a in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):
        idx = order[a:a + cfg.batch_size]
        for g, top in zip(opt.param_groups, (cfg.lr, cfg.scalar_lr)):
            g["lr"] = lr_at(cfg, step, total) * top / cfg.lr
        sb = p.series.take(idx)
        s = model.encode_series(torch.from_numpy(sb.patches), torch.from_numpy(sb.stats), torch.from_numpy(sb.mask))
        t = model.encode_text(*batch_ids(p, idx, pick[idx]))
        loss = siglip_loss(s, t, model.log_scale, model.bias)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        bar.update(1)
        bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.4f}")
    return float(np.mean(losses)) if losses else float("nan"), step


def build_data(cfg: SensorLMTrainConfig, out: Path):
    """(train Prepared, val Prepared, tokenizer): the pairs, and the tokenizer trained on the
    training captions (read back from out/tokenizer.json when a resumed run saved it)."""
    from specdifftree.files import write_atomic
    from specdifftree.sensorlm.checkpoint import TOKENIZER
    from specdifftree.sensorlm.inputs import load_tokenizer, train_tokenizer
    from specdifftree.sensorlm.pairs import build_pairs

    root, spec = data_root(cfg), replace(cfg.data, window=cfg.model.window)
    train, val = build_pairs(root, "train", spec, cfg.seed), build_pairs(root, "val", spec, cfg.seed)
    if len(train) < cfg.batch_size or not len(val):
        raise SDTError(f"too few pairs ({len(train)} train, {len(val)} val) for batch_size {cfg.batch_size}")
    if (out / TOKENIZER).is_file():
        tok = load_tokenizer(out / TOKENIZER)
    else:
        tok = train_tokenizer(train.corpus(), cfg.vocab)
        write_atomic(out / TOKENIZER, tok.to_str().encode())
    return prepare(train, tok, cfg.model), prepare(val, tok, cfg.model), tok


def check_out(out: Path, resume: bool) -> None:
    from specdifftree.sensorlm.checkpoint import MANIFEST

    if not resume and out.exists() and ((out / STATE).exists() or (out / MANIFEST).exists()):
        raise SDTError(f"{out} holds a sensorlm run already: pass --resume to continue it, or another --out")
    if out.exists() and not out.is_dir():
        raise SDTError(f"--out {out} is a file; give a directory")


def train_sensorlm(cfg: SensorLMTrainConfig, out: Path, resume: bool = False, wandb: bool = True,
                   show_progress: bool = True) -> dict:
    """Train (or resume) a run into `out`; -> the final record (config, data summary, metrics rows)."""
    import torch

    from specdifftree.machine import seeded, training_threads
    from specdifftree.progress import progress
    from specdifftree.sensorlm.model import SensorLM, n_params
    from specdifftree.tracking import Tracker
    from specdifftree.train.state import load_state, optimizer_tensors, restore_optimizer, save_state

    out = Path(out)
    check_out(out, resume)
    out.mkdir(parents=True, exist_ok=True)
    with training_threads(cfg.threads):
        train, val, tok = build_data(cfg, out)
        mcfg = SensorLMConfig(**{**asdict(cfg.model), "vocab": tok.get_vocab_size()})
        with seeded(cfg.seed):
            model = SensorLM(mcfg)
        opt = optimizer(model, cfg)
        rows, start = [], 0
        state = load_state(out / STATE) if resume else None
        if state is not None:
            tensors, meta = state
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            restore_optimizer(opt, tensors, meta["param_groups"])
            rows, start = meta["rows"], meta["epoch"]
        per_epoch = len(train.pairs) // cfg.batch_size
        total = per_epoch * cfg.epochs
        record = {"config": asdict(cfg), "params": n_params(model), "pairs": summary(train.pairs, val.pairs)}
        with Tracker(out, project="specdifftree", name=f"sensorlm-{out.name}", job_type="sensorlm",
                     config=record, enabled=wandb) as run, \
                progress(total, "sensorlm", "step", initial=start * per_epoch, enabled=show_progress) as bar:
            step = start * per_epoch
            for epoch in range(start, cfg.epochs):
                t0 = time.perf_counter()
                loss, step = train_epoch(model, opt, train, cfg, epoch, step, total, bar)
                row = {"epoch": epoch + 1, "step": step, "train_loss": loss, **validate(model, val, cfg.batch_size, cfg.seed),
                       "scale": model.log_scale.exp().item(), "bias": model.bias.item(),
                       "seconds": time.perf_counter() - t0}
                rows.append(row)
                run.log(row, step=step)
                opt_t, groups = optimizer_tensors(opt)
                save_state(out / STATE, {**{f"model.{k}": v for k, v in model.state_dict().items()}, **opt_t},
                           {"epoch": epoch + 1, "rows": rows, "param_groups": groups})
            record["metrics"] = rows
            finish(out, model, tok, record, run)
    return record


def summary(train: Pairs, val: Pairs) -> dict:
    def count(p: Pairs) -> dict:
        kinds: dict = {}
        for s in p.sources:
            kinds[s.split(":")[0]] = kinds.get(s.split(":")[0], 0) + 1
        return {"windows": len(p), "captions": sum(len(d) for d in p.texts), "by_source": kinds}

    return {"train": count(train), "val": count(val)}


def finish(out: Path, model, tok, record: dict, run) -> None:
    """The model files, metrics.csv and the plots."""
    from specdifftree.files import write_atomic
    from specdifftree.sensorlm.checkpoint import save_sensorlm

    save_sensorlm(out, model, tok, record)
    rows = record["metrics"]
    lines = [",".join(COLUMNS)] + [",".join(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c])
                                            for c in COLUMNS) for r in rows]
    write_atomic(out / "metrics.csv", ("\n".join(lines) + "\n").encode())
    for png in plot_rows(rows, out):
        run.image(png.stem, png)
    if rows:
        run.summary(rows[-1])


def plot_rows(rows: list[dict], out: Path) -> list[Path]:
    """loss.png (train and validation SigLIP loss) and recall.png (validation recall@1/@5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for stem, cols, title in (("loss", ("train_loss", "val_loss"), "SigLIP loss"),
                              ("recall", ("val_r1_s2t", "val_r5_s2t", "val_r1_t2s", "val_r5_t2s"),
                               "validation recall (s2t: window -> caption)")):
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
        for c in cols:
            ax.plot([r["epoch"] for r in rows], [r[c] for r in rows], marker="o", label=c)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"{stem}.png")
        plt.close(fig)
        paths.append(out / f"{stem}.png")
    return paths

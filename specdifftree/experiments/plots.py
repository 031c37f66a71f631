"""Plots of experiment records: forecast fan charts, forecast vs history PSDs, reward vs forward tokens.

A record is what `runner.run_cell` writes (record.json): per window the history [L], the target
[H] and each sample's values [H]. PSDs are the ones Spec-W1 compares (rewards/spectral.py): Welch
at the common segment length min(H, L, 64), on the 64-point grid over [0, 0.5] cycles per step,
each normalised to unit mass, then averaged over samples and windows.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

PSD_METHODS = ("greedy", "sample", "dts", "sadt", "sadt-sample")
BANDS = ((10, 90, 0.2), (25, 75, 0.35))  # (low, high percentile, alpha)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def forecasts(window: dict, horizon: int) -> np.ndarray:
    """The window's well-formed sample forecasts.  -> [S, H]"""
    vals = [s["values"] for s in window["samples"] if len(s.get("values") or ()) == horizon]
    return np.array(vals, dtype=np.float64).reshape(-1, horizon)


def mean_psds(record: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(f [64], mean unit-mass PSD of the forecasts [64], of the histories [64]) over a record's windows."""
    from specdifftree.rewards.spectral import psd, unit_mass

    H = record["cell"]["horizon"]
    fx, fc, f = [], [], None
    for w in record["windows"]:
        x, hist = forecasts(w, H), np.asarray(w["history"])
        if not len(x):
            continue
        nperseg = min(H, len(hist), 64)
        f, sc = psd(hist, nperseg=nperseg)
        fc.append(unit_mass(sc))
        fx.append(np.mean([unit_mass(psd(v, nperseg=nperseg)[1]) for v in x], axis=0))
    if f is None:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    return f, np.mean(fx, axis=0), np.mean(fc, axis=0)


def fan(ax, window: dict, horizon: int, title: str = "") -> None:
    """History tail, true continuation, the naive forecast (last value repeated) and the samples'
    median with percentile bands."""
    hist = np.asarray(window["history"])
    tail = hist[-min(len(hist), 3 * horizon):]
    t0 = np.arange(-len(tail), 0)
    t1 = np.arange(horizon)
    ax.plot(t0, tail, color="0.3", lw=1, label="history")
    ax.plot(t1, np.full(horizon, hist[-1]), color="C3", lw=1, ls=":", label="naive")
    if window.get("target") is not None:
        ax.plot(t1, window["target"], color="k", lw=1.2, ls="--", label="truth")
    x = forecasts(window, horizon)
    if len(x):
        for lo, hi, alpha in BANDS:
            ax.fill_between(t1, np.percentile(x, lo, axis=0), np.percentile(x, hi, axis=0), color="C0", alpha=alpha,
                            lw=0, label=f"{lo}-{hi}%")
        ax.plot(t1, np.median(x, axis=0), color="C0", lw=1.2, label="median")
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)


def plot_forecast(history, target, forecasts_: np.ndarray, horizon: int, path: str | Path, title: str = "") -> Path:
    """One forecast's fan chart as a PNG (what `sdt search --plot` writes): the history, the
    samples' percentile bands and median, the naive forecast and, when known, the truth.
    history: [L]; target: [H] or None; forecasts_: [S, H] well-formed sample forecasts."""
    plt = _pyplot()
    window = {"history": np.asarray(history, dtype=np.float64).tolist(),
              "target": None if target is None else np.asarray(target, dtype=np.float64).tolist(),
              "samples": [{"values": list(v)} for v in np.asarray(forecasts_, dtype=np.float64).reshape(-1, horizon)]}
    fig, ax = plt.subplots(figsize=(7, 3.2))
    fan(ax, window, horizon, title)
    ax.axvline(-0.5, color="0.7", lw=0.8)
    ax.set_xlabel("step (0 = first forecast step)", fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, Path(path))


def plot_cell(record: dict, out_dir: Path) -> dict[str, Path]:
    """The cell's first-window fan chart and its forecast vs history PSD, as PNGs. -> {name: path}"""
    plt = _pyplot()
    cell, H = record["cell"], record["cell"]["horizon"]
    paths = {}
    fig, ax = plt.subplots(figsize=(6, 3))
    fan(ax, record["windows"][0], H, f"{cell['dataset']} {cell['method']} ({record['windows'][0]['window']})")
    ax.legend(fontsize=7, loc="upper left")
    paths["fan"] = _save(fig, out_dir / "fan.png")
    f, sx, sc = mean_psds(record)
    if len(f):
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.semilogy(f, sc, color="k", lw=1.2, label="history")
        ax.semilogy(f, np.maximum(sx, 1e-12), color="C0", lw=1.2, label=cell["method"])
        _psd_axes(ax, f"{cell['dataset']}: PSD, forecasts vs history")
        paths["psd"] = _save(fig, out_dir / "psd.png")
    return paths


def plot_reward_vs_tokens(rows: list[dict], path: Path) -> Path:
    """rows: aggregated (dataset, method, budget) rows with <metric> and <metric>_se. Reward and
    Spec-W1 against mean forward tokens, one line per method, one column per dataset. Methods that
    cost no forward tokens (the reference forecasters) have no place on the log axis: each is a grey
    horizontal line at its mean. Past ten methods the colours repeat with another marker."""
    plt = _pyplot()
    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = plt.subplots(2, len(datasets), figsize=(5 * len(datasets) + 2, 6.5), squeeze=False)
    for j, ds in enumerate(datasets):
        by_method = defaultdict(list)
        for r in rows:
            if r["dataset"] == ds:
                by_method[r["method"]].append(r)
        searched = [m for m, rs in by_method.items() if any(r["forward_tokens"] > 0 for r in rs)]
        free = [m for m in by_method if m not in searched]
        for i, metric in enumerate(("reward", "spec_w1")):
            ax = axes[i, j]
            for k, method in enumerate(searched):
                rs = sorted(by_method[method], key=lambda r: r["forward_tokens"])
                ax.errorbar([r["forward_tokens"] for r in rs], [r[metric] for r in rs],
                            yerr=[_finite(r.get(f"{metric}_se")) for r in rs], marker="os^D"[k // 10 % 4], ms=4,
                            capsize=2, color=f"C{k % 10}", label=method)
            for k, method in enumerate(free):
                ax.axhline(float(np.mean([r[metric] for r in by_method[method]])), color="0.45", lw=1,
                           ls=("--", ":", "-.", (0, (5, 1, 1, 1)))[k % 4], label=f"{method} (0 tokens)")
            ax.set_xscale("log")
            ax.set_xlabel("forward tokens per query", fontsize=8)
            ax.set_ylabel(metric + (" (lower is better)" if metric == "spec_w1" else ""), fontsize=8)
            ax.set_title(ds, fontsize=9)
            ax.tick_params(labelsize=7)
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)  # clear of the data
    return _save(fig, path)


def plot_psd_comparison(records: list[dict], path: Path, methods=PSD_METHODS) -> Path:
    """Mean forecast PSD per method against the histories', one panel per dataset (each method's
    record at its largest budget, lowest seed)."""
    plt = _pyplot()
    chosen = pick(records, methods)
    datasets = sorted({r["cell"]["dataset"] for r in chosen})
    fig, axes = plt.subplots(1, max(len(datasets), 1), figsize=(5 * max(len(datasets), 1), 3.5), squeeze=False)
    for j, ds in enumerate(datasets):
        ax, history_drawn = axes[0, j], False
        for k, rec in enumerate(r for r in chosen if r["cell"]["dataset"] == ds):
            f, sx, sc = mean_psds(rec)
            if not len(f):
                continue
            if not history_drawn:
                ax.semilogy(f, sc, color="k", lw=1.5, label="history")
                history_drawn = True
            ax.semilogy(f, np.maximum(sx, 1e-12), color=f"C{k % 10}", lw=1.1, label=rec["cell"]["method"])
        _psd_axes(ax, f"{ds}: PSD of forecasts vs history")
    return _save(fig, path)


def plot_fans(records: list[dict], path: Path, max_cols: int = 4) -> Path:
    """Fan charts of each method's first evaluation window against the truth: each dataset takes
    as many rows of `max_cols` panels as it has methods."""
    plt = _pyplot()
    chosen = pick(records, None)
    datasets = sorted({r["cell"]["dataset"] for r in chosen})
    per = {d: [r for r in chosen if r["cell"]["dataset"] == d] for d in datasets}
    ncol = max(1, min(max_cols, max((len(v) for v in per.values()), default=1)))
    rows = {d: -(-len(v) // ncol) for d, v in per.items()}  # ceil
    nrow = max(1, sum(rows.values()))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 2.6 * nrow), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    top = 0
    for ds in datasets:
        for k, rec in enumerate(per[ds]):
            ax = axes[top + k // ncol, k % ncol]
            ax.axis("on")
            fan(ax, rec["windows"][0], rec["cell"]["horizon"], f"{ds} {rec['cell']['method']}")
        top += rows[ds]
    axes[0, 0].legend(fontsize=6, loc="upper left")
    return _save(fig, path)


def pick(records: list[dict], methods) -> list[dict]:
    """One record per (dataset, method): the largest budget, then the lowest seed; `methods`
    (None: all) filters and orders them."""
    best: dict = {}
    for r in records:
        c = r["cell"]
        if methods is not None and c["method"] not in methods:
            continue
        key = (c["dataset"], c["method"])
        if key not in best or (c["budget"], -c["seed"]) > (best[key]["cell"]["budget"], -best[key]["cell"]["seed"]):
            best[key] = r
    order = {m: i for i, m in enumerate(methods or [])}
    return sorted(best.values(), key=lambda r: (r["cell"]["dataset"], order.get(r["cell"]["method"], 0),
                                                 r["cell"]["method"]))


def _psd_axes(ax, title: str) -> None:
    ax.set_xlabel("frequency (cycles per step)", fontsize=8)
    ax.set_ylabel("unit-mass PSD", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)


def _finite(x) -> float:
    return float(x) if isinstance(x, (int, float)) and np.isfinite(x) else 0.0


def _save(fig, path: Path) -> Path:
    """Save atomically (tmp + replace) and close the figure."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)
    os.replace(tmp, path)
    return path

"""The text table: finished caption / qa cells -> a markdown table, the gains over sampling, and plots
(what `sdt compare DIR` shows for an experiment of text datasets, experiments/text_windows.py).

Every (seed, window) of a (dataset, method, budget) group is one unit: the table shows each
metric's mean over the units +- its standard error (std with ddof 1 over sqrt(units)), so the
error covers both the windows and the search's seeds.

Gains over sampling are paired: for each unit that both the method and `sample` ran (same seed, same
window), the method's value minus sampling's, then the mean and standard error of those differences:

    gain(metric)      = mean over units of  metric(method) - metric(sample)
    share of DTS gain = gain(reward, method) / gain(reward, dts)        (S-ADT: sadt, sadt-sample)
    share of tokens   = forward_tokens(method) / forward_tokens(dts)

Plots (written to PLOTDIR):
    text_accuracy.png     fact accuracy per level (captions) or accuracy (qa) per method, with error bars
    text_reward_vs_tokens.png   reward against forward tokens per method
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from specdifftree.experiments.metrics import mean_se
from specdifftree.experiments.text_windows import TEXT_METRICS

GROUP = ("dataset", "method", "budget")
SHOWN = TEXT_METRICS + ("reward", "forward_tokens", "wall_s")
GAIN_METRICS = ("fact_accuracy_low", "fact_accuracy_middle", "accuracy", "reward")
LABELS = {"fact_accuracy_low": "level 1 (statistics)", "fact_accuracy_middle": "level 2 (trends, spikes)",
          "fact_accuracy_high": "level 3 (events)", "accuracy": "answer accuracy", "answered": "answered"}
ORDER = ("greedy", "sample", "best-of-n", "beam", "smc", "mcts", "dts", "dts-star", "sadt", "sadt-sample")


def units(records: list[dict]) -> dict[tuple, dict[tuple, dict]]:
    """{(dataset, method, budget): {(seed, window): that window's metrics}}."""
    out: dict[tuple, dict] = defaultdict(dict)
    for r in records:
        c = r["cell"]
        for w in r["windows"]:
            out[tuple(c[k] for k in GROUP)][(c["seed"], w["window"])] = w["metrics"]
    return out


def aggregate(records: list[dict]) -> list[dict]:
    """One row per (dataset, method, budget): units, mean and se of each shown metric, and the paired
    gains over sampling (module docstring)."""
    groups = units(records)
    rows = []
    for key, per in groups.items():
        row = dict(zip(GROUP, key))
        row["units"] = len(per)
        for m in SHOWN:
            row[m], row[f"{m}_se"] = mean_se([u.get(m, math.nan) for u in per.values()])
        base = groups.get((key[0], "sample", key[2]), {})
        for m in GAIN_METRICS:
            diffs = [u.get(m, math.nan) - base[k].get(m, math.nan) for k, u in per.items() if k in base]
            row[f"gain_{m}"], row[f"gain_{m}_se"] = mean_se(diffs)
        rows.append(row)
    by = {tuple(r[k] for k in GROUP): r for r in rows}
    for r in rows:
        dts = by.get((r["dataset"], "dts", r["budget"]))
        if dts is not None:
            r["share_of_dts_gain"] = _ratio(r["gain_reward"], dts["gain_reward"])
            r["share_of_dts_tokens"] = _ratio(r["forward_tokens"], dts["forward_tokens"])
    rows.sort(key=lambda r: (str(r["dataset"]), int(r["budget"]), _rank(r["method"])))
    return rows


def _ratio(a, b) -> float:
    return a / b if all(isinstance(v, float) and math.isfinite(v) for v in (a, b)) and b != 0 else math.nan


def _rank(method: str) -> tuple:
    return (ORDER.index(method) if method in ORDER else len(ORDER), method)


def markdown(rows: list[dict]) -> str:
    """The table (metrics present in some row, `mean ± se`), then the gains over sampling."""
    from specdifftree.report import table

    shown = [m for m in SHOWN if any(_finite(r.get(m)) for r in rows)]
    head = ["dataset", "method", "budget", "units"]
    main = [{**{c: r[c] for c in head}, **{m: _pm(r.get(m), r.get(f"{m}_se")) for m in shown}} for r in rows]
    gains = [m for m in GAIN_METRICS if any(_finite(r.get(f"gain_{m}")) for r in rows)]
    extra = [{**{c: r[c] for c in head}, **{f"gain {m}": _pm(r.get(f"gain_{m}"), r.get(f"gain_{m}_se")) for m in gains},
              "share of DTS gain": _pct(r.get("share_of_dts_gain")), "share of DTS tokens": _pct(r.get("share_of_dts_tokens"))}
             for r in rows if r["method"] != "sample"]
    second = table(extra, head + [f"gain {m}" for m in gains] + ["share of DTS gain", "share of DTS tokens"],
                   markdown=True) if extra else ""
    return table(main, head + shown, markdown=True) + "\n\nPaired gains over sampling (same seed and window):\n\n" + second


def _pm(mean, se) -> str:
    from specdifftree.report import fmt

    if not _finite(mean):
        return ""
    return fmt(float(mean)) if not _finite(se) else f"{fmt(float(mean))} ± {fmt(float(se))}"


def _pct(x) -> str:
    return f"{100 * x:.1f}%" if _finite(x) else ""


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def plot_accuracy(rows: list[dict], path: Path) -> Path:
    """Bars of the accuracy metrics per method (error bars: se), one panel per dataset and budget."""
    plt = _pyplot()
    panels = sorted({(r["dataset"], r["budget"]) for r in rows})
    metrics = [m for m in TEXT_METRICS if m != "answered" and any(_finite(r.get(m)) for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.4), squeeze=False)
    for ax, (ds, budget) in zip(axes[0], panels):
        rs = [r for r in rows if (r["dataset"], r["budget"]) == (ds, budget)]
        x = np.arange(len(rs))
        width = 0.8 / max(len(metrics), 1)
        for k, m in enumerate(metrics):
            ax.bar(x + (k - (len(metrics) - 1) / 2) * width, [_num(r.get(m)) for r in rs], width,
                   yerr=[_num(r.get(f"{m}_se")) for r in rs], capsize=2, label=LABELS[m])
        ax.set_xticks(x, [r["method"] for r in rs], rotation=30, fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(f"{ds}, {budget:,} tokens", fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0, -1].legend(fontsize=7, frameon=False)
    return _save(fig, path)


def plot_reward_tokens(rows: list[dict], path: Path) -> Path:
    """Reward against mean forward tokens, a point per method (error bars: se), one panel per dataset."""
    plt = _pyplot()
    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets) + 1.5, 3.4), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        for k, r in enumerate(r for r in rows if r["dataset"] == ds):
            ax.errorbar([_num(r["forward_tokens"])], [_num(r["reward"])], yerr=[_num(r.get("reward_se"))],
                        marker="os^D"[k // 10 % 4], color=f"C{k % 10}", capsize=2, label=r["method"])
        ax.set_xscale("log")
        ax.set_xlabel("forward tokens per query", fontsize=8)
        ax.set_ylabel("reward", fontsize=8)
        ax.set_title(ds, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return _save(fig, path)


def _num(x) -> float:
    return float(x) if _finite(x) else 0.0


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """The figure as a PNG at `path`, written atomically; the figure is closed."""
    import io

    from specdifftree.files import write_atomic

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    _pyplot().close(fig)
    write_atomic(path, buf.getvalue())
    return Path(path)


def text_comparison(records: list[dict], out: Path, notes: str = "") -> tuple[str, list[dict], dict[str, Path]]:
    """(markdown, aggregated rows, plots) of finished text cells; writes table.md and the plots in `out`."""
    from specdifftree.files import write_text

    rows = aggregate(records)
    text = markdown(rows) + (f"\n\n{notes}" if notes else "")
    write_text(Path(out) / "table.md", text + "\n")
    plots = {"text_accuracy": plot_accuracy(rows, Path(out) / "text_accuracy.png"),
             "text_reward_vs_tokens": plot_reward_tokens(rows, Path(out) / "text_reward_vs_tokens.png")}
    return text, rows, plots


__all__ = ["aggregate", "markdown", "plot_accuracy", "plot_reward_tokens", "text_comparison", "units"]

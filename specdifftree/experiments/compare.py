"""`sdt compare`: experiment cells -> a markdown table (mean and standard error over seeds) and plots.

Cells come from local run directories (`DIR/cells/*/record.json`, written by `sdt experiment
run`) and/or from W&B (`--wandb-project`: the summaries of its `experiment` runs; that needs a
login, since offline runs live only on disk). Cells are grouped by (experiment, dataset, method,
budget); each metric's mean over windows is one value per seed, and the table shows the mean
over seeds +- its standard error (std with ddof 1 over sqrt(seeds); blank with one seed).

Plots (written to PLOTDIR):
    reward_vs_tokens.png   reward and Spec-W1 against forward tokens, a line per method
    psd.png                mean forecast PSD vs history PSD: greedy, sample, dts, sadt, sadt-sample
    fans.png               forecast fan charts against the truth, first window, each method
Under the table: what the cells were made with (weights' sha256, library versions, CPU).
PSD and fan charts need the samples, so they come from local records only.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from specdifftree.errors import SDTError
from specdifftree.experiments.metrics import WINDOW_METRICS, mean_se
from specdifftree.experiments.provenance import describe_provenance
from specdifftree.experiments.runner import RESULT_COLUMNS, read_records, result_row
from specdifftree.files import write_text

GROUP = ("experiment", "dataset", "method", "budget")
TABLE_METRICS = ("reward", "spec_w1", "crps", "mase", "smape", "diversity", "forward_tokens", "wall_s")


@dataclass
class Comparison:
    table: str  # markdown
    rows: list[dict]  # aggregated: GROUP keys, seeds, windows, <metric>, <metric>_se
    plots: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def compare(dirs: list[str | Path], plot_dir: Optional[str | Path] = None,
            wandb_project: Optional[str] = None) -> Comparison:
    from specdifftree.experiments.plots import plot_fans, plot_psd_comparison, plot_reward_vs_tokens
    from specdifftree.experiments.text_windows import is_text_record

    records = []
    for d in dirs:
        if not Path(d).is_dir():
            raise SDTError(f"not a directory: {d}")
        found = read_records(d)
        if not found:
            raise SDTError(f"{d}: no finished cells (cells/*/record.json); run `sdt experiment run` first")
        records += found
    cells = [result_row(r) for r in records]
    notes = []
    if wandb_project:
        cells += wandb_cells(wandb_project)
        notes.append(f"W&B project {wandb_project}: PSD and fan charts use local records only")
    if not cells:
        raise SDTError("nothing to compare: give run directories or --wandb-project")
    rows = aggregate(cells)
    out = Path(plot_dir) if plot_dir else (Path(dirs[0]) / "compare" if dirs else Path("runs") / "compare")
    if records and all(is_text_record(r) for r in records):  # captions / answers: experiments/text_report.py
        from specdifftree.experiments.text_report import text_comparison

        return Comparison(*text_comparison(records, out, describe_provenance(cells)), notes)
    table = markdown_table(rows) + "\n\n" + describe_provenance(cells)
    write_text(out / "table.md", table + "\n")
    plots = {"reward_vs_tokens": plot_reward_vs_tokens(rows, out / "reward_vs_tokens.png")}
    if records:
        plots["psd"] = plot_psd_comparison(records, out / "psd.png")
        plots["fans"] = plot_fans(records, out / "fans.png")
    return Comparison(table, rows, plots, notes)


def aggregate(cells: list[dict]) -> list[dict]:
    """Cells (one per seed) -> one row per GROUP with seeds, windows per seed, mean and se of each metric."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for c in cells:
        groups[tuple(c.get(k) for k in GROUP)].append(c)
    rows = []
    for key, cs in groups.items():
        row = dict(zip(GROUP, key))
        row["horizon"] = cs[0].get("horizon")
        row["seeds"] = len({c.get("seed") for c in cs})
        row["windows"] = min(int(c.get("windows") or 0) for c in cs)
        for m in WINDOW_METRICS:
            row[m], row[f"{m}_se"] = mean_se([c.get(m) for c in cs])
        rows.append(row)
    rows.sort(key=lambda r: (str(r["experiment"]), str(r["dataset"]), int(r["budget"] or 0), str(r["method"])))
    return rows


def markdown_table(rows: list[dict], metrics=TABLE_METRICS) -> str:
    """Aligned markdown: one row per group, each metric as `mean ± se` (mean alone with one seed)."""
    from specdifftree.report import fmt, table

    show_experiment = len({r["experiment"] for r in rows}) > 1
    cols = (["experiment"] if show_experiment else []) + ["dataset", "method", "budget", "seeds", "windows"]
    out = []
    for r in rows:
        line = {c: r[c] for c in cols}
        for m in metrics:
            mean, se = r.get(m), r.get(f"{m}_se")
            line[m] = fmt(mean) if se is None or se != se else f"{fmt(mean)} ± {fmt(se)}"
        out.append(line)
    return table(out, cols + list(metrics), markdown=True)


def wandb_cells(project: str) -> list[dict]:
    """The cell summaries of the `experiment` runs of a W&B project (needs a login)."""
    from specdifftree.tracking import wandb_mode

    if wandb_mode() != "online":
        raise SDTError("--wandb-project reads runs from the W&B server, which needs a login (`wandb login` or "
                       "WANDB_API_KEY); offline runs are in DIR/cells/*/wandb: compare them with `sdt compare DIR` "
                       "or upload them with `wandb sync`")
    import wandb

    try:
        runs = wandb.Api().runs(project, filters={"jobType": "experiment"})
        cells = [{k: run.summary.get(k) for k in RESULT_COLUMNS} for run in runs]
    except Exception as e:  # noqa: BLE001 - the W&B client raises many error types
        raise SDTError(f"cannot read W&B project {project}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    cells = [c for c in cells if c.get("method") is not None and c.get("budget") is not None]
    if not cells:
        raise SDTError(f"W&B project {project} has no experiment runs")
    return cells

"""What a stage leaves for people to read: metrics.csv, PNG curves and a self-contained index.html.

    write_metrics_csv(stage_dir / "metrics.csv", rows)
    pngs = plot_curves(rows, stage_dir)                   # loss.png, perplexity.png, accuracy.png, ...
    write_index(stage_dir, stage, summary, rows, pngs, predictions)

Every file is written atomically. The HTML embeds the plots as base64 and needs no other file.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

from specdifftree.report import fmt
from specdifftree.files import write_atomic

LABEL_KEYS = ("label", "chosen_label", "parsed_label")  # gold, the prior's choice, parsed from the text
COLUMNS = ("epoch", "train_loss", "val_loss", "val_perplexity", "val_accuracy", "val_macro_recall")
CURVES = {  # file stem -> (title, columns)
    "loss": ("loss (NLL per answer token)", ("train_loss", "val_loss")),
    "perplexity": ("validation perplexity", ("val_perplexity",)),
    "accuracy": ("validation accuracy", ("val_accuracy",)),
    "macro_recall": ("validation macro recall", ("val_macro_recall",)),
}


def _cell(v) -> str:
    """CSV cell: empty for None/NaN, full precision for floats."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.10g}" if isinstance(v, float) else str(v)


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    lines = [",".join(COLUMNS)] + [",".join(_cell(r.get(c)) for c in COLUMNS) for r in rows]
    write_atomic(Path(path), ("\n".join(lines) + "\n").encode())


def _present(rows: list[dict], col: str) -> bool:
    return any(isinstance(r.get(col), (int, float)) and not math.isnan(r[col]) for r in rows)


def plot_curves(rows: list[dict], out_dir: Path) -> list[Path]:
    """One PNG per curve that has values (macro recall only where the stage has labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for stem, (title, cols) in CURVES.items():
        cols = [c for c in cols if _present(rows, c)]
        if not cols:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
        for c in cols:
            pts = [(r["epoch"], r[c]) for r in rows if r.get(c) is not None and not math.isnan(r[c])]
            ax.plot(*zip(*pts), marker="o", label=c)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        path = Path(out_dir) / f"{stem}.png"
        write_atomic(path, buf.getvalue())
        paths.append(path)
    return paths


def _table(rows: list[dict], columns) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(r.get(c, '')))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pre(text: str, limit: int = 600) -> str:
    text = text if len(text) <= limit else "..." + text[-limit:]
    return f"<pre>{html.escape(text)}</pre>"


def write_index(out_dir: Path, stage: str, summary: dict, rows: list[dict], pngs: list[Path],
                predictions: list[dict]) -> Path:
    """index.html: summary figures, curves, the metrics table and sample test predictions."""
    figures = [{"figure": k, "value": v} for k, v in summary.items() if not isinstance(v, (dict, list))]
    imgs = "".join(f'<figure><img alt="{p.stem}" src="data:image/png;base64,'
                   f'{base64.b64encode(p.read_bytes()).decode()}"></figure>' for p in pngs)
    preds = "".join(
        "<tr>" + "".join(f"<td>{_pre(str(p.get(k) or ''))}</td>" for k in ("prompt", "generated", "gold"))
        + "".join(f"<td>{html.escape(str(p.get(k) or ''))}</td>" for k in LABEL_KEYS) + "</tr>"
        for p in predictions)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(stage)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1200px; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }}
pre {{ white-space: pre-wrap; margin: 0; max-width: 420px; font-size: 12px; }}
figure {{ display: inline-block; margin: 0.5em; }}
</style></head><body>
<h1>{html.escape(stage)}</h1>
<h2>Test summary</h2>{_table(figures, ["figure", "value"])}
<h2>Curves</h2>{imgs}
<h2>Metrics per epoch</h2>{_table(rows, COLUMNS)}
<h2>Sample test predictions</h2>
<table><tr><th>prompt</th><th>generated</th><th>gold</th>{"".join(f"<th>{k}</th>" for k in LABEL_KEYS)}</tr>{preds}</table>
</body></html>
"""
    path = Path(out_dir) / "index.html"
    write_atomic(path, page.encode())
    return path

"""Plain-text tables that line up, for terminals and markdown."""

from __future__ import annotations


def fmt(x) -> str:
    if isinstance(x, float):
        if x != x:
            return "nan"
        return f"{x:.4g}" if abs(x) < 1e4 else f"{x:,.0f}"
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}"
    return str(x)


def table(rows: list[dict], columns: list[str] | None = None, markdown: bool = False) -> str:
    """Rows of dicts -> aligned text (numbers right-aligned), or a markdown table."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])
    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    numeric = [all(isinstance(r.get(c), (int, float)) for r in rows) for c in columns]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]

    def line(vals):
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)]
        return ("| " + " | ".join(parts) + " |") if markdown else "  ".join(parts).rstrip()

    out = [line(columns)]
    if markdown:
        out.append("|" + "|".join(("-" * (w + 1) + ":") if num else "-" * (w + 2) for w, num in zip(widths, numeric)) + "|")
    else:
        out.append("  ".join("-" * w for w in widths))
    out += [line(r) for r in cells]
    return "\n".join(out)

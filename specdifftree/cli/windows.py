"""`sdt search --windows N`: N consecutive forecast windows of one file searched at once (api.search_many).

Window i of N (i = 0 .. N-1) ends at `--end - (N - 1 - i) * --horizon` (`--end` defaults to the
file's end): the last one ends at --end, each earlier one a horizon before, so each window's truth is
the next window's last H points. Every window is searched with the same options and --seed, as N
separate `sdt search` runs would be, and gets the same samples as such a run; --out writes a JSON
list of their records, in window order.
"""

from __future__ import annotations

import click

from specdifftree.errors import SDTError


def window_contexts(n: int, series, column, horizon, context_length, end) -> list:
    """The N Contexts (module docstring); SDTError without a series and a horizon."""
    from specdifftree.api import build_context

    if series is None or horizon is None:
        raise SDTError("--windows N searches N forecast windows: give --series FILE.csv and --horizon H")
    last = build_context(series, column, horizon, context_length, end)
    end = last.meta["end"]
    if end - (n - 1) * horizon < 4:
        raise SDTError(f"--windows {n}: the first window would end at {end - (n - 1) * horizon}; use fewer "
                       "windows, a shorter --horizon or a later --end")
    return [build_context(series, column, horizon, context_length, end - (n - 1 - i) * horizon)
            for i in range(n - 1)] + [last]


def search_windows(prior, contexts: list, method: str, quiet: bool, out, save_buffer, **kw) -> None:
    """Search the windows in lockstep, write the records (--out: a list) and buffers, print a table.
    kw: search_many's keywords (reward, lam, backbone, placement and SearchConfig fields)."""
    from specdifftree.api import search_many

    runs = search_many(prior, contexts, method=method, progress=not quiet, **kw)
    if out:
        from specdifftree.files import write_json

        write_json(out, [run.record() for run in runs])
    if save_buffer:
        for run in runs:
            run.save_buffer(save_buffer)
    if quiet:
        return
    from specdifftree.report import table

    rows = []
    for run in runs:
        rewards = [s.reward for s in run.result.samples]
        stats = run.result.stats()
        rows.append({"end": run.problem.context.meta.get("end"), "samples": len(rewards),
                     "mean reward": sum(rewards) / max(len(rewards), 1), "forward tokens": stats["forward_tokens"],
                     **{k: run.forecast[1][k] for k in ("crps", "mase") if k in run.forecast[1]}})
    click.echo(table(rows) + f"\n{len(runs)} windows, {method}, searched in lockstep")

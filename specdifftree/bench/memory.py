"""Host memory per search-tree node, measured as a user sees it: the peak RSS of a whole
`sdt search --method dts` process at two forward-token budgets.

    m = node_memory("hf:shapes/qwen3-0.6b-L2-s0", SearchWindow(series, "OT", end=13976))
    m["bytes_per_node"]         # (peak RSS at 6,000 - at 1,000) / (nodes at 6,000 - at 1,000)

Each search runs in its own process (`python -m specdifftree.cli search ... -q`, started by a
small launcher, see `_LAUNCHER`), so the peak is that search's alone (`ru_maxrss` from
`os.wait4`), not the benchmark's. A tree that kept a
`[V]` float32 row per node would grow by 4 V bytes per node (594 KiB at V = 151,936); the
bound is 16 KiB. `sdt bench speed` reports it (`--node-memory`), and tests/test_tree_memory.py
asserts it on both backends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from specdifftree.errors import SDTError

BUDGETS = (1000, 6000)  # forward tokens of the small and the large search
BOUND_BYTES = 16 * 1024  # at most 16 KB per extra tree node


@dataclass(frozen=True)
class SearchWindow:
    """The forecast the searches make: `context_length` points of `column` before row `end`."""

    series: str
    column: str | None  # None: the file's default column
    end: int
    context_length: int = 96
    horizon: int = 24

    def context(self):
        """The search's `Context` (history, horizon, codec, truth where the file has it)."""
        from specdifftree.data.context import build_context

        return build_context(self.series, self.column, self.horizon, self.context_length, self.end)


def search_peak_rss(prior: str, budget: int, window: SearchWindow, placement: tuple[str, ...] = (),
                    batch: int = 16) -> tuple[int, dict, str]:
    """(peak RSS in bytes, the search's stats, stderr) of `sdt search --prior PRIOR --method dts --budget
    BUDGET` (spectral reward) on `window`, run in a child process (`_LAUNCHER`) with one OpenMP
    thread."""
    package_root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(prefix="sdt-node-memory-") as tmp:
        out = Path(tmp) / "search.json"
        args = [sys.executable, "-m", "specdifftree.cli", "search", "--prior", prior,
                "--series", window.series, *(("--column", window.column) if window.column else ()), "--end", window.end,
                "--context-length", window.context_length, "--horizon", window.horizon,
                "--reward", "spectral", "--method", "dts", "--iterations", 1_000_000, "--budget", budget,
                "--batch-size", batch, "--samples", 4, "--out", out, "-q", *placement]
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(package_root), os.environ.get("PYTHONPATH")]))}
        proc = subprocess.run([sys.executable, "-c", _LAUNCHER, *map(str, args)], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            last = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            raise SDTError(f"the memory search (budget {budget}) failed: {last[0]}")
        stats = json.loads(out.read_text())["stats"]
    peak = int(proc.stdout.split()[-1]) * (1 if sys.platform == "darwin" else 1024)
    err = proc.stderr
    return peak, stats, err


# Runs the search as its grandchild and prints its ru_maxrss. Started straight from this process,
# the search would report at least this process's own peak: Linux starts a child with vfork and, at
# exec, records the shared (parent's) high-water RSS as the child's ru_maxrss, so a benchmark that
# holds a 2 GB model saw every search at 2 GB. The launcher's fresh, small address space is what
# its own child inherits instead.
_LAUNCHER = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL); "
             "_, status, usage = os.wait4(p.pid, 0); print(usage.ru_maxrss); "
             "sys.exit(os.waitstatus_to_exitcode(status))")


def node_memory(prior: str, window: SearchWindow, placement: tuple[str, ...] = (),
                budgets: tuple[int, int] = BUDGETS) -> dict:
    """Peak RSS of DTS at the two budgets and its growth per extra tree node (bytes), split into
      kv_bytes_per_node    the model's own KV cache on the host (`host_kv_bytes` of the searches'
                           stats: keys and values per position, fixed by the model's layers and heads);
      rows_bytes_per_node  the tree's row pool filling up towards its fixed cap (`row_pool_bytes`:
                           bounded, so it stops growing once full, however large the tree);
      beyond_kv_per_node   the rest: the tree's arrays and bookkeeping, which the bound is about.
    `warnings` counts the lines of either search's stderr that name a warning (a default search
    prints none)."""
    small, large = (search_peak_rss(prior, b, window, placement) for b in budgets)
    nodes = [small[1]["tree_nodes"], large[1]["tree_nodes"]]
    kv = [small[1]["host_kv_bytes"], large[1]["host_kv_bytes"]]
    rows = [small[1]["row_pool_bytes"], large[1]["row_pool_bytes"]]
    extra_nodes = nodes[1] - nodes[0]
    if extra_nodes <= 0:
        raise SDTError(f"the {budgets[1]}-token search grew no larger a tree than the {budgets[0]}-token one")
    per_node = (large[0] - small[0]) / extra_nodes
    kv_per_node, rows_per_node = (kv[1] - kv[0]) / extra_nodes, (rows[1] - rows[0]) / extra_nodes
    return {
        "budgets": list(budgets), "peak_rss_bytes": [small[0], large[0]], "tree_nodes": nodes,
        "host_kv_bytes": kv, "row_pool_bytes": rows, "bytes_per_node": per_node,
        "kv_bytes_per_node": kv_per_node, "rows_bytes_per_node": rows_per_node,
        "beyond_kv_per_node": per_node - kv_per_node - rows_per_node, "bound_bytes": BOUND_BYTES,
        "warnings": sum("Warning" in line for run in (small, large) for line in run[2].splitlines()),
    }


def describe(m: dict) -> str:
    """One line: the growth per node, its KV-cache part and the rest against the bound."""
    mib, kib = 2**20, 1024
    (b0, b1), (r0, r1), (n0, n1) = m["budgets"], m["peak_rss_bytes"], m["tree_nodes"]

    def verdict(x: float) -> str:
        return f"{'meets' if x <= m['bound_bytes'] else 'MISSES'} the <= {m['bound_bytes'] // kib} KiB bound"

    return (f"host memory per extra tree node, whole `sdt search --method dts` process: "
            f"{m['bytes_per_node'] / kib:.2f} KiB ({verdict(m['bytes_per_node'])}; peak RSS {r0 / mib:.0f} MiB "
            f"at {n0} nodes, budget {b0}; {r1 / mib:.0f} MiB at {n1} nodes, budget {b1}); of which the model's "
            f"KV cache on the host {m['kv_bytes_per_node'] / kib:.2f} KiB, the row pool filling towards its "
            f"cap {m['rows_bytes_per_node'] / kib:.2f} KiB ({m['row_pool_bytes'][0] / mib:.0f} -> "
            f"{m['row_pool_bytes'][1] / mib:.0f} MiB), and the rest {m['beyond_kv_per_node'] / kib:.2f} KiB "
            f"({verdict(m['beyond_kv_per_node'])})")

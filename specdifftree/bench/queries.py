"""`sdt bench speed --queries N`: N queries searched in lockstep (search/many.py) against the same N
one after another, on the same backbone in the same process.

    report = queries_report(queries, contexts, QueriesConfig(batch=16, iterations=64))
    print(queries_summary([report]))

The N queries are consecutive evaluation windows of the bench series (`bench_windows`: the first
window of `sdt bench speed`, then each next one `horizon` points later), so their prompts differ.
Each runs DTS (`batch` leaves per round, `iterations` iterations, seed `seed`) twice per repeat:
sequential (`run_search` on each query in turn) and batched (`run_many`: every round's rows of all
queries in one forward, at most `max_rows` per forward). Rates are new tokens (tree nodes - 1, all
queries) per second; the two modes alternate after one untimed warm-up of each, `repeats` times, and
the report gives medians, ranges and the per-pair ratio, and whether both modes drew the same
samples. Peak memory per mode: host RSS (sampled every 5 ms during the run) and, on CUDA, the
allocator's peak.

On llama.cpp the backbone is reopened with room for N queries (`sized_for_queries`): every query of
a round holds its prompt and `batch` answers of up to `max_len` tokens at once, so n_ctx = max(4096,
N * (prompt + batch * max_len)) KV cells, of which up to half may be kept for prefixes outside the
current call (`cell_budget`), and n_seq_max = N * batch + N sequence ids (llama.cpp allows at most
`llama_max_parallel_sequences()`; fewer make the rounds' rows evict each other); both modes run on it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace

import numpy as np

from specdifftree.errors import SDTError


@dataclass
class QueriesConfig:
    queries: int = 12  # N
    batch: int = 16  # DTS leaves per round, per query
    iterations: int = 64  # DTS iterations per query
    repeats: int = 3  # alternating (sequential, batched) pairs, timed
    seed: int = 0
    max_rows: int | None = None  # rows per forward (None: search.many's default for the device)

    def __post_init__(self):
        if min(self.queries, self.batch, self.iterations, self.repeats) < 1:
            raise SDTError("--queries, --batch, --iterations and --repeats must be >= 1")


def bench_windows(series, column, context_length: int, horizon: int, n: int) -> list:
    """n Contexts: `bench.speed.bench_window`'s window, then each next one `horizon` points later."""
    from specdifftree.bench.speed import bench_window

    first = bench_window(series, column, context_length, horizon)
    return [replace(first, end=first.end + i * horizon).context() for i in range(n)]


def sized_for_queries(queries, contexts: list, batch: int):
    """`queries` (problem.Queries) whose llama.cpp backbone has room for the contexts' queries at
    `batch` rows each (module docstring; a transformers backbone's slot pool grows by itself:
    returned as it is)."""
    from specdifftree.prior.backbones.llamacpp import LlamaCppBackbone

    old = getattr(queries.source, "backbone", None)
    if not isinstance(old, LlamaCppBackbone):
        return queries
    priors = [queries.problem(c).prior for c in contexts]
    n_ctx = max(old.n_ctx, sum(len(p.prompt_ids) + batch * p.max_len for p in priors))
    n_seq = min(int(old.lib.llama_max_parallel_sequences()), max(old.n_seq_max, len(priors) * (batch + 1)))
    for p in priors:
        p.close()
    backbone = LlamaCppBackbone(old.path, n_seq_max=n_seq, n_ctx=n_ctx, cell_budget=n_ctx // 2,
                                n_threads=int(old.lib.llama_n_threads(old.ctx)))
    old.close()
    return replace(queries, source=replace(queries.source, backbone=backbone))


class PeakMemory:
    """Peak host RSS (sampled every 5 ms) and, on CUDA, the allocator's peak while the block runs."""

    def __init__(self, device=None):
        self.device, self.host, self.cuda = device, 0, None
        self._stop = threading.Event()

    def __enter__(self) -> "PeakMemory":
        from specdifftree.bench.speed import current_rss

        if self._on_cuda():
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
        self.host = current_rss()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        from specdifftree.bench.speed import current_rss

        while not self._stop.wait(0.005):
            self.host = max(self.host, current_rss())

    def __exit__(self, *exc) -> None:
        from specdifftree.bench.speed import current_rss

        self._stop.set()
        self._thread.join()
        self.host = max(self.host, current_rss())
        if self._on_cuda():
            import torch

            self.cuda = int(torch.cuda.max_memory_allocated(self.device))

    def _on_cuda(self) -> bool:
        return getattr(self.device, "type", None) == "cuda"


def one_mode(queries, contexts: list, cfg: QueriesConfig, batched: bool) -> dict:
    """One timed run of all queries, sequential or batched: new tokens, forward tokens, seconds, peak
    memory, the samples' tokens; every prior closed after (untimed)."""
    from specdifftree.search.common import SearchConfig
    from specdifftree.search.many import ManyStats, run_many
    from specdifftree.search.registry import run_search

    search = SearchConfig(iterations=cfg.iterations, batch_size=cfg.batch, samples=1, seed=cfg.seed, lam=queries.lam)
    problems = [queries.problem(c) for c in contexts]
    stats = ManyStats()
    device = getattr(problems[0].prior.backbone, "device", None)
    with PeakMemory(device) as peak:
        _sync(device)
        t0 = time.perf_counter()
        if batched:
            results = run_many(problems, "dts", search, max_rows=cfg.max_rows, max_active=len(problems), stats=stats)
        else:
            results = [run_search(p, "dts", search) for p in problems]
        _sync(device)
        seconds = time.perf_counter() - t0
    for p in problems:
        p.prior.close()
    return {"new": sum(r.tree_nodes - 1 for r in results), "forward": sum(r.forward_tokens for r in results),
            "seconds": seconds, "peak_host_bytes": peak.host, "peak_device_bytes": peak.cuda,
            "forwards": stats.forwards if batched else sum(r.model_calls for r in results),
            "samples": [[s.tokens for s in r.samples] for r in results]}


def _sync(device) -> None:
    if getattr(device, "type", None) == "cuda":
        import torch

        torch.cuda.synchronize(device)


def queries_report(queries, contexts: list, cfg: QueriesConfig, progress: bool = True) -> dict:
    """Sequential against batched tokens/s of the same queries (module docstring)."""
    from specdifftree.bench.speed import backbone_threads, package_versions, spread
    from specdifftree.progress import progress as progress_bar

    backbone = queries.problem(contexts[0]).prior.backbone
    warm = QueriesConfig(**{**vars(cfg), "iterations": min(cfg.iterations, cfg.batch)})
    with progress_bar(2 * cfg.repeats + 2, f"bench speed --queries {len(contexts)}", "runs", enabled=progress) as bar:
        for batched in (False, True):  # warm-up: the KV pool and the allocator grow to what the runs need
            one_mode(queries, contexts, warm, batched)
            bar.update()
        runs = {False: [], True: []}
        for _ in range(cfg.repeats):
            for batched in (False, True):
                runs[batched].append(one_mode(queries, contexts, cfg, batched))
                bar.update()
    seq, bat = runs[False], runs[True]
    rate = {k: [r["new"] / r["seconds"] for r in v] for k, v in runs.items()}
    ratios = [b / s for s, b in zip(rate[False], rate[True])]
    prior = queries.problem(contexts[0]).prior
    return {
        "backend": "llama.cpp" if hasattr(backbone, "n_ctx") else "transformers", "queries": len(contexts),
        "device": str(getattr(backbone, "device", "cpu")),
        "dtype": str(getattr(backbone, "dtype", "float32")).removeprefix("torch."), "vocab_size": prior.vocab_size,
        "prompt_tokens": [len(queries.problem(c).prior.prompt_ids) for c in (contexts[0], contexts[-1])],
        "threads": backbone_threads(backbone), "versions": package_versions(),
        **{k: v for k, v in vars(cfg).items() if k != "queries"},
        "max_rows_used": cfg.max_rows or _default_rows(prior),
        "sequential_tok_s": spread(rate[False])["median"], "batched_tok_s": spread(rate[True])["median"],
        "ratio": spread(ratios)["median"], "ratio_spread": spread(ratios),
        "sequential_tok_s_spread": spread(rate[False]), "batched_tok_s_spread": spread(rate[True]),
        "new_tokens": seq[-1]["new"], "forward_tokens": [seq[-1]["forward"], bat[-1]["forward"]],
        "model_calls": [seq[-1]["forwards"], bat[-1]["forwards"]],
        "peak_host_bytes": [max(r["peak_host_bytes"] for r in seq), max(r["peak_host_bytes"] for r in bat)],
        "peak_device_bytes": [seq[-1]["peak_device_bytes"], bat[-1]["peak_device_bytes"]],
        "same_samples": all(s["samples"] == b["samples"] for s, b in zip(seq, bat)),
    }


def _default_rows(prior) -> int:
    from specdifftree.search.many import default_max_rows

    return default_max_rows(prior)


def run_queries(spec: str, counts: list[int], cfg: QueriesConfig, *, series=None, column=None,
                context_length: int = 96, horizon: int = 24, placement=None, progress: bool = True) -> list[dict]:
    """`queries_report` at each N in `counts` on the prior `spec` (opened once; on llama.cpp reopened
    with the KV cells for N queries)."""
    from specdifftree.problem import Queries

    base = Queries.open(spec, ["spectral"], placement=placement)
    reports = []
    for n in counts:
        contexts = bench_windows(series, column, context_length, horizon, n)
        queries = sized_for_queries(base, contexts, cfg.batch)
        reports.append(queries_report(queries, contexts, replace(cfg, queries=n), progress=progress))
    return reports


def queries_summary(reports: list[dict]) -> str:
    """A table (one row per backend and N) and how it was measured."""
    from specdifftree.report import table

    mib = 2**20
    rows = []
    for r in reports:
        dev = [f"{b / mib:.0f}" if b is not None else "-" for b in r["peak_device_bytes"]]
        rows.append({"backend": r["backend"], "device": r["device"], "dtype": r["dtype"], "N": r["queries"],
                     "sequential tok/s": f"{r['sequential_tok_s']:.0f}", "batched tok/s": f"{r['batched_tok_s']:.0f}",
                     "ratio": f"{r['ratio']:.2f}", "ratio range": "{min:.2f}-{max:.2f}".format(**r["ratio_spread"]),
                     "forwards seq/bat": "{}/{}".format(*r["model_calls"]),
                     "peak host MiB seq/bat": "{:.0f}/{:.0f}".format(*(b / mib for b in r["peak_host_bytes"])),
                     "peak device MiB seq/bat": "/".join(dev), "same samples": "yes" if r["same_samples"] else "NO"})
    r = reports[0]
    how = (f"How: DTS, {r['iterations']} iterations of {r['batch']} leaves per query, seed {r['seed']}, on N "
           f"consecutive evaluation windows (prompts of {r['prompt_tokens'][0]}-{r['prompt_tokens'][1]} tokens); "
           f"sequential = one query after another, batched = all N in lockstep (at most {r['max_rows_used']} rows "
           f"per forward); new tokens of all queries per second, median of {r['repeats']} alternating pairs after "
           f"a warm-up; {r['threads']} thread(s).")
    return table(rows, list(rows[0])) + "\n" + how

"""Search speed on a real backbone: DTS against plain batched sampling, same model, same process.

    context = bench_context(None, None, context_length=96, horizon=24)   # the first ETTh1 eval window
    problem = Queries.open(bench_spec("default", "gguf"), ["spectral"]).problem(context)
    report = speed_report(problem, SpeedConfig(batch=16, iterations=64))
    print(summary(report))

The problem's prior is a forecasting `TSLMPrior` (prompt = a series window written with the
number codec, grammar mask, encoder bias) on either backend, on the device and dtype it was opened
with. Two workloads, timed alternately after one untimed warm-up of each, `repeats` times; the
report gives the median and range of each rate and of the per-pair ratio:

  dts       `run_dts` with the problem's reward, `batch` leaves per round (their rollouts advance
            together, one forward call per step), `iterations` iterations. New tokens = tree nodes
            - 1 (every node is a token the search generated); forward tokens = positions the
            backbone ran (the prompt once, plus any prefix it had to rebuild after an eviction).
  sampling  plain batched ancestral sampling of as many tokens: `batch` sequences of
            ceil(new / batch) tokens, with the backend's own batched sampler:
              transformers  model.generate(do_sample=True, top_k=0, num_return_sequences=batch)
              llama.cpp     LlamaCppBackbone.sample: the prompt decoded once and shared by
                            `batch` sequence ids, then one llama_decode of `batch` tokens per step
                            (in as many calls as the context's KV cells need, the prompt once per call)

Also: peak host memory; host memory per tree node (RSS with a small and a large tree alive, the
bounded row pool of `search.rows` left out); peak device memory on CUDA; with `long_prompt`, the same
at a prompt of that many tokens (how each workload's rate falls with prompt length). `--shape`
models come from `bench.shapes`.

Targets: DTS tokens/s >= 1.0x sampling tokens/s; forward tokens per new token <= 1.1.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from specdifftree.errors import SDTError
from specdifftree.machine import seeded

TARGET_RATIO, TARGET_FORWARD = 1.0, 1.1


@dataclass
class SpeedConfig:
    batch: int = 16  # DTS leaves per round = sampled sequences
    iterations: int = 64  # DTS iterations per run
    repeats: int = 5  # timed runs of each workload, alternating; medians and ranges reported
    seed: int = 0
    long_prompt: int = 0  # also measure at a forecast prompt of about this many tokens (0: no)

    def __post_init__(self):
        if min(self.batch, self.iterations, self.repeats) < 1:
            raise SDTError("--batch, --iterations and --repeats must be >= 1")
        if self.long_prompt < 0:
            raise SDTError("--long-prompt must be >= 0 tokens")


def bench_spec(backbone: str, backend: str | None = None) -> str:
    """The --prior spec to open: `default` on the gguf backend is its f32 GGUF export (made once)."""
    from specdifftree.prior.spec import parse_prior

    kind = "gguf" if parse_prior(backbone).kind == "gguf" else "hf"
    backend = backend or kind
    if backend == "gguf" and backbone == "default":
        from specdifftree.prior.gguf import default_gguf

        return f"gguf:{default_gguf()}"
    if backend != kind:
        raise SDTError(f"--backend {backend} cannot run --backbone {backbone}; export it with "
                       "`sdt export-gguf DIR --out F.gguf` and pass --backbone gguf:F.gguf")
    return backbone


def shape_spec(backbone: str, shape: str | None, layers: int | None) -> str:
    """The backbone spec to bench: `backbone`, or a random model of `shape` cut to `layers` (hf:DIR)."""
    if shape is not None:
        from specdifftree.bench.shapes import shape_dir

        return f"hf:{shape_dir(shape, layers)}"
    if layers is not None:
        raise SDTError("--layers cuts a --shape; give --shape NAME")
    return backbone


def bench_window(series: str | None, column: str | None, context_length: int, horizon: int):
    """The first evaluation window (`data/splits.py`) of `series` (by default the shared ETTh1
    file's OT column) as a `bench.memory.SearchWindow`."""
    from specdifftree.bench.memory import SearchWindow
    from specdifftree.data.series import read_csv_column
    from specdifftree.data.splits import ett_range
    from specdifftree.paths import default_data_dir

    if series is None:
        root = default_data_dir()
        if root is None:
            raise SDTError("no --series given and shared/data was not found beside the checkout; pass --series FILE.csv")
        series, column = str(root / "ett" / "ETTh1.csv"), column or "OT"
    end = ett_range(len(read_csv_column(series, column)), "eval")[0] + context_length
    return SearchWindow(str(series), column, end, context_length, horizon)


def bench_context(series: str | None, column: str | None, context_length: int, horizon: int):
    """The Context of `bench_window`'s window."""
    return bench_window(series, column, context_length, horizon).context()


def context_for_prompt(backbone, series: str | None, column: str | None, horizon: int, tokens: int):
    """A bench context whose forecast prompt is about `tokens` tokens long on `backbone`'s tokenizer."""
    from specdifftree.data.prompts import forecast_prompt

    def prompt_len(length: int) -> tuple[int, object]:
        ctx = bench_context(series, column, length, horizon)
        return len(backbone.tokenize(forecast_prompt(ctx.series, horizon, ctx.codec))), ctx

    (a, _), (b, _) = prompt_len(32), prompt_len(64)
    length = max(4, round(32 + (tokens - a) * 32 / max(b - a, 1)))
    return prompt_len(length)[1]


def add_long_prompt(report: dict, long_problem, cfg: SpeedConfig) -> dict:
    """Measure `long_problem` (the same backbone, a long prompt) as `speed_report` does and record, under
    "long_prompt", its rates and how much of the short prompt's rate each workload keeps."""
    long = speed_report(long_problem, cfg)
    report["at_long_prompt"] = {
        "prompt_tokens": long["prompt_tokens"], "dts_tok_s": long["dts_tok_s"],
        "sampling_tok_s": long["sampling_tok_s"], "throughput_ratio": long["throughput_ratio"],
        "throughput_ratio_spread": long["throughput_ratio_spread"], "forward_per_new": long["forward_per_new"],
        "dts_kept": long["dts_tok_s"] / report["dts_tok_s"],
        "sampling_kept": long["sampling_tok_s"] / report["sampling_tok_s"],
        # how the cost of a new token grows with the prompt: added milliseconds per token
        "dts_ms_added": 1e3 * (1 / long["dts_tok_s"] - 1 / report["dts_tok_s"]),
        "sampling_ms_added": 1e3 * (1 / long["sampling_tok_s"] - 1 / report["sampling_tok_s"]),
    }
    report["peak_host_bytes"] = long["peak_host_bytes"]
    if "peak_device_bytes" in long:
        report["peak_device_bytes"] = max(report["peak_device_bytes"], long["peak_device_bytes"])
    return report


def _is_hf(backbone) -> bool:
    from specdifftree.prior.backbones.hf import HFBackbone

    return isinstance(backbone, HFBackbone)


def dts_run(problem, cfg: SpeedConfig, iterations: int) -> dict:
    """One DTS search: new tokens, seconds, forward tokens, tree nodes and the host memory the live
    tree holds (RSS with the tree alive minus RSS before); its handles are released after (untimed)."""
    from specdifftree.search.common import Problem, SearchConfig
    from specdifftree.search.registry import run_search

    fresh = Problem(problem.prior, problem.reward, problem.context)  # no reward cache from earlier runs
    search = SearchConfig(iterations=iterations, batch_size=cfg.batch, samples=1, seed=cfg.seed)
    before = current_rss()
    result = run_search(fresh, "dts", search)
    tree = result.tree
    held = current_rss() - before
    problem.prior.release(tree.handle[: tree.size][tree.evaluated[: tree.size]])
    return {"new": tree.size - 1, "seconds": result.wall_s, "forward": result.forward_tokens,
            "nodes": tree.size, "rss_held": held, "row_pool_bytes": tree.rows.nbytes, "reloads": tree.reloads}


def current_rss() -> int:
    """This process's resident memory now, in bytes (Linux /proc; 0 where it is unknown)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_rss() -> int:
    """This process's peak resident memory so far, in bytes."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def sampling_run(backbone, prompt_ids: list[int], n_new: int, batch: int, seed: int) -> tuple[int, float]:
    """(new tokens, seconds) of plain batched ancestral sampling of `batch` x `n_new` tokens."""
    if _is_hf(backbone):
        import torch

        ids = torch.tensor([prompt_ids], dtype=torch.long, device=backbone.device)
        with seeded(seed), torch.inference_mode():  # eos_token_id=None: EOS does not stop a row
            _sync(backbone)
            t0 = time.perf_counter()
            out = backbone.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                                          max_new_tokens=n_new, num_return_sequences=batch, eos_token_id=None,
                                          pad_token_id=backbone.tokenizer.pad_token_id or 0)
            _sync(backbone)
            seconds = time.perf_counter() - t0
        return batch * (out.shape[1] - len(prompt_ids)), seconds
    from specdifftree.search.sampler import sample

    rng = np.random.default_rng(seed)
    per_call = max(1, (backbone.n_ctx - len(prompt_ids)) // batch)  # what fits in the KV cells at once
    t0 = time.perf_counter()
    done = 0
    while done < n_new:
        done += backbone.sample(prompt_ids, min(per_call, n_new - done), batch,
                                lambda lg: sample(lg - lg.max(1, keepdims=True), rng.random(len(lg)))[0]).shape[1]
    return batch * done, time.perf_counter() - t0


def _sync(backbone) -> None:
    """Wait for queued device work (CUDA), so that a timer measures it."""
    import torch

    if backbone.device.type == "cuda":
        torch.cuda.synchronize(backbone.device)


def spread(values: list[float]) -> dict:
    """Median, min and max of repeated measurements."""
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values))}


def speed_report(problem, cfg: SpeedConfig, progress: bool = True) -> dict:
    """Tokens/s of DTS and of batched sampling of as many tokens on the problem's backbone, in
    `cfg.repeats` alternating pairs after an untimed warm-up of each: the median and spread of each
    rate and of the per-pair ratio; forward tokens per new token; peak host memory, the host memory
    the tree holds per node, and (CUDA) peak device memory. Prints only its progress (stderr, when
    `progress`: a bar on a terminal, a line now and then in a log)."""
    prior = problem.prior
    backbone, prompt_ids = prior.backbone, prior.prompt_ids
    if _is_hf(backbone) and backbone.device.type == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(backbone.device)
    from specdifftree.progress import progress as progress_bar

    bar = progress_bar(2 * cfg.repeats + 2, f"bench speed ({len(prompt_ids)}-token prompt)", "runs", enabled=progress)
    dts_run(problem, cfg, cfg.iterations)  # warm-up (the backbone's KV pool grows to what the tree needs)
    sampling_run(backbone, prompt_ids, 4, cfg.batch, cfg.seed)
    bar.update()
    runs, sampled_runs = [], []
    for r in range(cfg.repeats):
        runs.append(dts_run(problem, cfg, cfg.iterations))  # same seed: the same tree every time
        bar.update()
        sampled_runs.append(sampling_run(backbone, prompt_ids, math.ceil(runs[-1]["new"] / cfg.batch),
                                         cfg.batch, cfg.seed + r))
        bar.update()
    small = dts_run(problem, cfg, max(1, cfg.iterations // 4))  # the small tree for memory per node
    bar.update()
    bar.close()
    new, forward, sampled = runs[-1]["new"], runs[-1]["forward"], sampled_runs[-1][0]
    dts_rates = [run["new"] / run["seconds"] for run in runs]
    sampling_rates = [n / s for n, s in sampled_runs]
    ratios = [d / g for d, g in zip(dts_rates, sampling_rates)]
    big = runs[-1]
    # the row pool is bounded (row_pool_cap): what grows without bound is the rest, per node
    unbounded = [run["rss_held"] - run["row_pool_bytes"] for run in (small, big)]
    per_node = (unbounded[1] - unbounded[0]) / max(big["nodes"] - small["nodes"], 1)
    report = {
        "backend": "transformers" if _is_hf(backbone) else "llama.cpp", "prior": prior.name,
        "versions": package_versions(), "device": str(getattr(backbone, "device", "cpu")),
        "dtype": str(getattr(backbone, "dtype", "float32")).removeprefix("torch."),
        "vocab_size": prior.vocab_size, "prompt_tokens": len(prompt_ids), "horizon": problem.context.horizon,
        **asdict(cfg), "threads": backbone_threads(backbone), "cpus": os.cpu_count(),
        "load_avg": list(os.getloadavg()),
        "dts_new_tokens": new, "dts_forward_tokens": forward, "sampled_tokens": sampled,
        "dts_tok_s": spread(dts_rates)["median"], "sampling_tok_s": spread(sampling_rates)["median"],
        "throughput_ratio": spread(ratios)["median"], "forward_per_new": forward / new,
        "dts_tok_s_spread": spread(dts_rates), "sampling_tok_s_spread": spread(sampling_rates),
        "throughput_ratio_spread": spread(ratios),
        "dts_seconds": [run["seconds"] for run in runs], "sampling_seconds": [s for _, s in sampled_runs],
        "peak_host_bytes": peak_rss(), "host_bytes_per_node": per_node,
        "tree_nodes": big["nodes"], "tree_nodes_small": small["nodes"], "row_pool_bytes": big["row_pool_bytes"],
        "row_pool_cap_bytes": row_pool_cap(prior.vocab_size), "row_reloads": big["reloads"],
    }
    if _is_hf(backbone) and backbone.device.type == "cuda":
        import torch

        report["peak_device_bytes"] = int(torch.cuda.max_memory_allocated(backbone.device))
    return report


def row_pool_cap(vocab_size: int) -> int:
    """The most the tree's row pool holds at this vocabulary (float32 rows), in bytes."""
    from specdifftree.search import rows

    return max(rows.ROW_POOL_BYTES, rows.MIN_ROWS * 4 * vocab_size)


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers", "llama_cpp_python"):
        try:
            out[pkg] = version(pkg.replace("_", "-"))
        except PackageNotFoundError:
            out[pkg] = None
    return out


def backbone_threads(backbone) -> int:
    if _is_hf(backbone):
        import torch

        return torch.get_num_threads()
    return int(backbone.lib.llama_n_threads(backbone.ctx))


def run_speed(backbone: str = "default", cfg: SpeedConfig | None = None, *, shape: str | None = None,
              layers: int | None = None, backend: str | None = None, series: str | None = None,
              column: str | None = None, context_length: int = 96, horizon: int = 24, node_memory: bool = True,
              placement=None) -> dict:
    """What `sdt bench speed` reports: `speed_report` on the backbone (or a random model of `shape`,
    cut to `layers`), with the long-prompt rows when `cfg.long_prompt`, and with `node_memory` the
    peak RSS per tree node of whole searches in child processes. placement: a Placement."""
    from specdifftree.prior.backbones.base import Placement
    from specdifftree.problem import Queries

    cfg = cfg or SpeedConfig()
    placement = placement or Placement()
    spec = bench_spec(shape_spec(backbone, shape, layers), backend)
    window = bench_window(series, column, context_length, horizon)
    queries = Queries.open(spec, ["spectral"], placement=placement)
    problem = queries.problem(window.context())
    report = speed_report(problem, cfg)
    if shape is not None:
        report["shape"], report["layers"] = shape, layers
    if cfg.long_prompt:  # the same backbone, loaded once, on a longer prompt
        ctx = context_for_prompt(problem.prior.backbone, series, column, horizon, cfg.long_prompt)
        add_long_prompt(report, queries.problem(ctx), cfg)
    if node_memory:  # whole searches in child processes: their peak RSS is theirs alone
        from specdifftree.bench.memory import node_memory as measure

        args = ("--device", placement.device, "--dtype", placement.dtype,
                *(("--n-gpu-layers", str(placement.n_gpu_layers)) if placement.n_gpu_layers is not None else ()))
        report["node_memory"] = measure(spec, window, args)
    return report


def summary(report: dict) -> str:
    """The two ratios against their targets, memory, and one sentence on how they were measured."""
    r = report
    sampler = ("model.generate(do_sample=True, num_return_sequences={batch})" if r["backend"] == "transformers"
               else "one llama_decode of {batch} sequences per step, the prompt decoded once per "
                    "call of as many tokens as the KV cells hold").format(**r)

    def verdict(ok: bool) -> str:
        return "meets" if ok else "MISSES"

    def rng(key: str, fmt: str = ".0f") -> str:
        s = r[key + "_spread"]
        return f"{s['min']:{fmt}}-{s['max']:{fmt}}"

    mib = 2**20
    lines = [
        f"throughput ratio DTS / sampling: {r['throughput_ratio']:.2f} (median of {r['repeats']} pairs, "
        f"range {rng('throughput_ratio', '.2f')}; {r['dts_tok_s']:.0f} [{rng('dts_tok_s')}] vs "
        f"{r['sampling_tok_s']:.0f} [{rng('sampling_tok_s')}] tokens/s; "
        f"{verdict(r['throughput_ratio'] >= TARGET_RATIO)} the >= {TARGET_RATIO} target)",
        f"forward tokens per new token in DTS: {r['forward_per_new']:.3f} ({r['dts_forward_tokens']} for "
        f"{r['dts_new_tokens']}; {verdict(r['forward_per_new'] <= TARGET_FORWARD)} the <= {TARGET_FORWARD} target)",
        f"memory: peak host {r['peak_host_bytes'] / mib:.0f} MiB; host memory per tree node "
        f"{r['host_bytes_per_node'] / 1024:.2f} KiB (RSS with the tree alive, {r['tree_nodes_small']} vs "
        f"{r['tree_nodes']} nodes, the KV pool grown beforehand, the bounded row pool left out: next-token "
        f"rows take at most {r['row_pool_cap_bytes'] / mib:.0f} MiB, {r['row_pool_bytes'] / mib:.0f} MiB here, "
        f"{r['row_reloads']} rows recomputed)"
        + (f"; peak device {r['peak_device_bytes'] / mib:.0f} MiB" if "peak_device_bytes" in r else ""),
    ]
    if "node_memory" in r:
        from specdifftree.bench.memory import describe

        lines.append(describe(r["node_memory"]))
    if "at_long_prompt" in r:
        lp = r["at_long_prompt"]
        lines.append(
            f"at a {lp['prompt_tokens']}-token prompt: DTS {lp['dts_tok_s']:.0f} vs sampling "
            f"{lp['sampling_tok_s']:.0f} tokens/s (ratio {lp['throughput_ratio']:.2f}); from the short prompt "
            f"DTS keeps {lp['dts_kept']:.2f} of its rate, sampling {lp['sampling_kept']:.2f}; the longer prompt "
            f"adds {lp['dts_ms_added']:.2f} ms per new token to DTS and {lp['sampling_ms_added']:.2f} ms to sampling "
            f"({'no more' if lp['dts_ms_added'] <= lp['sampling_ms_added'] else 'MORE'} for DTS)")
    v = r["versions"]
    lines.append(
        f"How: {r['backend']} backend (torch {v['torch']}, transformers {v['transformers']}, llama-cpp-python "
        f"{v['llama_cpp_python']}) on {r['device']} in {r['dtype']}, vocabulary {r['vocab_size']}, "
        f"{r['threads']} thread(s) on {r['cpus']} CPUs (load average {r['load_avg'][0]:.1f} at the end), one "
        f"process. DTS ran {r['iterations']} iterations with {r['batch']} leaves per round on a "
        f"{r['prompt_tokens']}-token forecast prompt (horizon {r['horizon']}); plain batched sampling "
        f"({sampler}) drew {r['sampled_tokens']} tokens, about as many. Each workload ran once untimed, then "
        f"{r['repeats']} times alternately; medians and ranges are over those runs.")
    return "\n".join(lines)

"""`sdt bench exactness` (total variation to the exact pi* on enumerable problems), `sdt bench
speed` (DTS throughput on a real backbone) and `sdt bench memory` (host memory per tree node of any prior)."""

from __future__ import annotations

import json

import click

from specdifftree.cli.options import CONTEXT, int_list, placement, placement_options


@click.group(context_settings=CONTEXT, epilog="""\b
Examples:
  sdt bench exactness --problem toy3 --seeds 3
  sdt bench speed --backbone default
  sdt bench memory --prior opentslm:ckpt/flamingo.pt --backbone hf:llm/Llama-3.2-1B""")
def bench():
    """Benchmarks: exactness on enumerable problems, and search speed on a real backbone."""


@bench.command(context_settings=CONTEXT, epilog="""\b
Examples:
  sdt bench exactness                          # toy3, default budgets, table
  sdt bench exactness --problem deep2 --seeds 5 --json > exactness.json
  sdt bench exactness --list""")
@click.option("--problem", "problems", multiple=True, default=("toy3",), show_default=True,
              help="Built-in problem(s); see --list.")
@click.option("--budgets", default=None, help="Comma-separated forward-token budgets [default: per problem].")
@click.option("--methods", default="dts,smc,best-of-n-is,sample", show_default=True)
@click.option("--samples", type=int, default=5000, show_default=True, help="Samples drawn per run.")
@click.option("--seeds", type=int, default=3, show_default=True, help="Runs averaged per cell.")
@click.option("--child-weight", type=click.Choice(["prior", "count"]), default="prior", show_default=True,
              help="DTS child weight (see `sdt search --help`).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--list", "list_only", is_flag=True, help="List the built-in problems and exit.")
def exactness(problems, budgets, methods, samples, seeds, child_weight, as_json, list_only):
    """Total-variation distance to the exact pi* against forward tokens, with the i.i.d. noise floor."""
    from specdifftree.bench.exactness import list_problems, run_exactness

    if list_only:
        click.echo(list_problems())
        return
    budget_list = int_list(budgets, "--budgets") if budgets else None
    rows = run_exactness(list(problems), budget_list, [m.strip() for m in methods.split(",") if m.strip()],
                         samples, seeds, child_weight=child_weight)  # progress: stderr
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        from specdifftree.report import table

        click.echo(table(rows))


@bench.command(context_settings=CONTEXT, epilog="""\b
Examples:
  sdt bench speed                                  # the default backbone, transformers backend
  sdt bench speed --backend gguf                   # the same weights through llama.cpp (f32 GGUF)
  sdt bench speed --shape qwen3-0.6b --layers 2    # a random model with Qwen3's vocabulary and sizes
  sdt bench speed --shape llama-3.2-1b --layers 2 --long-prompt 2000 --device cuda
  sdt bench speed --backbone gguf:runs/bb.gguf --batch 32 --iterations 128 --json
  sdt bench speed --queries 12 --repeats 1          # 12 queries batched vs one after another, both backends
  sdt bench speed --shape llama-3.2-1b --device cuda --dtype bfloat16 --queries 1,8,64""")
@click.option("--backbone", default="default", show_default=True, help="default | hf:DIR | gguf:FILE.")
@click.option("--shape", default=None, metavar="NAME",
              help="Instead of --backbone: a random-weight model shaped like llama-3.2-1b, qwen3-0.6b or "
                   "gemma-3-270m (built once under $SDT_HOME/shapes).")
@click.option("--layers", type=int, default=None, help="--shape: keep only this many decoder layers.")
@click.option("--backend", type=click.Choice(["hf", "gguf"]), default=None,
              help="Backend for --backbone default [default: hf; gguf:FILE runs on llama.cpp].")
@click.option("--series", type=click.Path(dir_okay=False), default=None,
              help="CSV of the context series [default: shared/data/ett/ETTh1.csv, column OT].")
@click.option("--column", default=None, help="Column of --series.")
@click.option("--context-length", type=int, default=96, show_default=True, help="History points in the prompt.")
@click.option("--horizon", type=int, default=24, show_default=True, help="Values the forecast holds.")
@click.option("--batch", type=int, default=16, show_default=True, help="DTS leaves per round = sampled sequences.")
@click.option("--iterations", type=int, default=64, show_default=True, help="DTS iterations per run.")
@click.option("--repeats", type=int, default=5, show_default=True,
              help="Timed runs of each workload, alternating (medians and ranges are reported).")
@click.option("--long-prompt", type=int, default=0, show_default=True,
              help="Also measure at a forecast prompt of about this many tokens (e.g. 2000; 0: no).")
@click.option("--node-memory/--no-node-memory", default=True, show_default=True,
              help="Also run `sdt search --method dts` at budgets 1,000 and 6,000 in child processes and "
                   "report how much their peak RSS grows per extra tree node (bound: 16 KiB).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--queries", default=None, metavar="N[,N...]",
              help="Instead: tokens/s of N DTS queries (consecutive evaluation windows) searched in lockstep "
                   "against the same N one after another, and peak memory; one row per N and backend (without "
                   "--backend, --backbone default runs on both). --max-rows: rows per forward.")
@click.option("--max-rows", type=int, default=None, help="--queries: rows per forward [default: 256 on the host, "
                                                          "2048 on a GPU].")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@placement_options
def speed(backbone, shape, layers, backend, series, column, context_length, horizon, node_memory, queries, max_rows,
          as_json, device, dtype, n_gpu_layers, **opts):
    """DTS token throughput vs plain batched sampling on the same model, forward tokens per new token, memory."""
    from specdifftree.bench.speed import SpeedConfig, run_speed, summary

    if queries is not None:
        _speed_queries(backbone, shape, layers, backend, int_list(queries, "--queries"), max_rows, as_json,
                       placement(device, dtype, n_gpu_layers), series=series, column=column,
                       context_length=context_length, horizon=horizon, **opts)
        return
    report = run_speed(backbone, SpeedConfig(**opts), shape=shape, layers=layers, backend=backend, series=series,
                       column=column, context_length=context_length, horizon=horizon, node_memory=node_memory,
                       placement=placement(device, dtype, n_gpu_layers))
    click.echo(json.dumps(report, indent=1) if as_json else summary(report))


def _speed_queries(backbone, shape, layers, backend, counts, max_rows, as_json, place, **kw):
    """`sdt bench speed --queries`: bench/queries.py on each backend asked for."""
    from specdifftree.bench.queries import QueriesConfig, queries_summary, run_queries
    from specdifftree.bench.speed import bench_spec, shape_spec

    cfg = QueriesConfig(batch=kw.pop("batch"), iterations=kw.pop("iterations"), repeats=kw.pop("repeats"),
                        seed=kw.pop("seed"), max_rows=max_rows)
    kw.pop("long_prompt", None)
    spec = shape_spec(backbone, shape, layers)
    backends = [backend] if backend or spec != "default" else ["hf", "gguf"]
    reports = [r for b in backends for r in run_queries(bench_spec(spec, b), counts, cfg, placement=place, **kw)]
    click.echo(json.dumps(reports, indent=1) if as_json else queries_summary(reports))


@bench.command(context_settings=CONTEXT, epilog="""\b
Examples:
  sdt bench memory --prior default
  sdt bench memory --prior opentslm:ckpt/flamingo.pt --backbone hf:llm/Llama-3.2-1B --json
  sdt bench memory --prior runs/prior --series data.csv --column y --horizon 12""")
@click.option("--prior", "prior_spec", default="default", show_default=True,
              help="Any `sdt search --prior` spec (default, DIR, hf:, gguf:, opentslm:CKPT).")
@click.option("--backbone", default=None, help="The base LLM of an opentslm: prior (hf:DIR), as `sdt search`.")
@click.option("--series", type=click.Path(dir_okay=False), default=None,
              help="CSV of the context series [default: shared/data/ett/ETTh1.csv, column OT].")
@click.option("--column", default=None, help="Column of --series.")
@click.option("--context-length", type=int, default=96, show_default=True, help="History points in the prompt.")
@click.option("--horizon", type=int, default=24, show_default=True, help="Values the forecast holds.")
@click.option("--json", "as_json", is_flag=True, help="Print the measurement as JSON.")
@placement_options
def memory(prior_spec, backbone, series, column, context_length, horizon, as_json, device, dtype, n_gpu_layers):
    """Host memory per extra tree node: `sdt search --method dts` at budgets 1,000 and 6,000 in child
    processes, their peak RSS split into the model's KV cache, the bounded row pool and the rest."""
    from specdifftree.bench.memory import describe, node_memory
    from specdifftree.bench.speed import bench_window

    place = placement(device, dtype, n_gpu_layers)
    args = (*(("--backbone", backbone) if backbone else ()), "--device", place.device, "--dtype", place.dtype,
            *(("--n-gpu-layers", str(place.n_gpu_layers)) if place.n_gpu_layers is not None else ()))
    report = node_memory(prior_spec, bench_window(series, column, context_length, horizon), args)
    click.echo(json.dumps(report, indent=1) if as_json else describe(report))

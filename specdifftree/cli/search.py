"""`sdt search`: one query, one method; a thin layer over `api.search_run`."""

from __future__ import annotations

import click

from specdifftree.cli.options import (CONTEXT, load_search_preset, load_yaml_defaults, option_default, placement,
                                      placement_options, presets)
from specdifftree.errors import SDTError


@click.command(context_settings=CONTEXT, epilog="""\b
Examples:
  # exact DTS on a Markov prior with a reward plugin, 20,000 samples from the finished tree
  sdt search --prior markov:toy.json --reward plugin.py:fn --method dts \\
      --iterations 5000 --samples 20000 --lambda 1.0 --seed 0 --out out.json
  # a built-in enumerable problem (prior, reward and lambda included), at a budget of 200 tokens
  sdt search --prior markov:toy3 --method smc --budget 200
  # weighted rewards on a forecast: spectral fidelity to the history plus format validity
  sdt search --prior markov:examples/digits.json --series ETTh1.csv --column OT --context-length 96 \\
      --horizon 24 --reward "spectral + 0.5*format" --method dts
  # the embedded default prior forecasting a real ETTh1 window, steered by the spectral reward
  sdt search --prior default --series ../shared/data/ett/ETTh1.csv --column OT --end 15000 \\
      --context-length 96 --horizon 24 --reward spectral --method dts --iterations 200 --samples 32
  # a caption of an ETTh1 window, steered towards captions whose facts the series supports
  sdt search --task caption --prior default --series ../shared/data/ett/ETTh1.csv --column OT --end 15000 \
      --context-length 96 --reward caption-consistency --method dts --iterations 20 --out c.json
  # a question about a chest-accelerometer window (its three axes), answered "... Answer: <choice>"
  sdt search --task qa --prior default --series ../shared/data/har_chest_acc/1.csv --end 20000 \
      --context-length 512 --question "What is the person doing?" --choices walking,standing,sitting \
      --method dts --reward answer-consistency --iterations 20
  # S-ADT: save DTS trees to a buffer, train a flow network (`sdt amortize`), then search with it
  sdt search --prior markov:toy3 --method dts --iterations 300 --save-buffer runs/buf.safetensors
  sdt search --prior markov:toy3 --method sadt-sample --flow runs/flow --samples 1000

\b
Output (--out): {"samples": [{"tokens", "text", "reward"}, ...],
                 "stats": {"forward_tokens", "model_calls", "wall_s", "tree_nodes", "host_kv_bytes",
                           "row_pool_bytes"},
                 "weights": {"sha256", "checkpoint", "installed_prior"}, ...}""")
@click.option("--config", type=click.Path(dir_okay=False), callback=load_yaml_defaults, is_eager=True,
              expose_value=False, help="YAML file of option defaults (command line wins).")
@click.option("--preset", type=click.Choice(presets("search")), callback=load_search_preset, is_eager=True,
              expose_value=False, help="Option defaults from configs/search/NAME.yaml (--config and the command line win).")
@click.option("--prior", "prior", required=True, metavar="SPEC",
              help="markov:FILE.json | markov:NAME (built-in) | default | hf:ID_OR_PATH | gguf:FILE | "
                   "opentslm:CKPT | checkpoint DIR.")
@click.option("--backbone", default=None, metavar="hf:LLM_DIR",
              help="The LLM of an opentslm:CKPT prior (or one replacing a checkpoint DIR's).")
@click.option("--reward", "rewards", multiple=True, metavar="SPEC",
              help="spectral | format | length | smoothness | bounds | caption-consistency | answer-consistency | "
                   "sensorlm:DIR (a trained sdt sensorlm model) | FILE.py:fn | module:fn; "
                   "terms join with '+', weights as 0.5*NAME; repeatable (summed).")
@click.option("--method", default="dts", show_default=True, metavar="NAME",
              help="dts, dts-star, greedy, sample, best-of-n, best-of-n-is, beam, smc, mcts, sadt, sadt-sample; "
                   "reference forecasters: naive, seasonal-naive, stats:auto-ets, stats:auto-theta.")
@click.option("--iterations", type=int, default=option_default("iterations"), show_default=True, help="Tree iterations (dts, dts-star, mcts).")
@click.option("--samples", type=int, default=option_default("samples"), show_default=True, help="Sequences returned.")
@click.option("--lambda", "lam", type=float, default=None, help="Inverse temperature lambda of pi* [default: 1.0].")
@click.option("--seed", type=int, default=option_default("seed"), show_default=True)
@click.option("--budget", type=int, default=None, help="Cap on forward tokens (compare methods at equal cost).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the result as JSON here.")
@click.option("--save-tree", type=click.Path(dir_okay=False), default=None, help="Export the tree as GraphML.")
@click.option("--save-buffer", type=click.Path(dir_okay=False), default=None,
              help="Append the finished tree (dts, dts-star) to this search buffer, for `sdt amortize`.")
@click.option("--task", default="forecast", show_default=True, metavar="NAME",
              help="forecast | caption | qa: the prompt, the answer's grammar and the metrics (docs/tasks.md).")
@click.option("--question", default=None, metavar="TEXT", help="--task qa: the question.")
@click.option("--choices", default=None, metavar="A,B,C", help="--task qa: the answers allowed, comma-separated.")
@click.option("--max-chars", type=int, default=None, metavar="N",
              help="--task caption: most characters of a caption [240]; qa: of the reasoning before 'Answer:' [160].")
@click.option("--series", type=click.Path(), multiple=True,
              help="CSV of the context series (for spectral rewards). Repeat it (or --column) for several series: "
                   "the first is forecast, opentslm: priors describe and encode them all.")
@click.option("--column", multiple=True, help="Column of --series (default: its only numeric column); repeatable.")
@click.option("--horizon", type=int, default=None, help="Values the forecast should hold.")
@click.option("--context-length", type=int, default=None, help="Use the N points of --series before --end.")
@click.option("--end", type=int, default=None, help="Index one past the last context point [default: end of file];"
              " the H points after it, when present, are the ground truth for metrics.")
@click.option("--windows", type=int, default=1, show_default=True, metavar="N",
              help="Search N consecutive windows of --series at once, in lockstep (one backbone forward per round "
                   "for all): window i of N ends at --end - (N-1-i) * --horizon. Each gets what its own run with "
                   "--seed would; --out writes a JSON list of their records.")
@click.option("--batch-size", type=int, default=option_default("batch_size"), show_default=True, help="Leaves per round (batched rollouts).")
@click.option("--widen-c", type=float, default=option_default("widen_c"), show_default=True, help="Progressive widening C.")
@click.option("--widen-alpha", type=float, default=option_default("widen_alpha"), show_default=True, help="Progressive widening alpha.")
@click.option("--c-uct", type=float, default=option_default("c_uct"), show_default=True, help="Exploration constant (dts-star, mcts).")
@click.option("--child-weight", type=click.Choice(["prior", "count"]), default=option_default("child_weight"), show_default=True,
              help="Child weight in DTS: p(a|s) over explored tokens, or draw multiplicity.")
@click.option("--temperature", type=float, default=option_default("temperature"), show_default=True)
@click.option("--top-k", type=int, default=option_default("top_k"), show_default=True, help="0 = off.")
@click.option("--top-p", type=float, default=option_default("top_p"), show_default=True, help="1 = off.")
@click.option("--n", "n", type=int, default=option_default("n"), show_default=True, help="Best-of-N candidates per batch.")
@click.option("--beam-width", type=int, default=option_default("beam_width"), show_default=True)
@click.option("--particles", type=int, default=option_default("particles"), show_default=True, help="SMC particles.")
@click.option("--ess-threshold", type=float, default=option_default("ess_threshold"), show_default=True, help="SMC resamples below this ESS fraction.")
@click.option("--potential", type=click.Choice(["partial", "none", "flow"]), default=option_default("potential"), show_default=True,
              help="SMC twist: reward of the partial decode, none, or the flow network's F_phi (--flow).")
@click.option("--flow", type=click.Path(file_okay=False), default=option_default("flow"),
              help="Flow network from `sdt amortize` (sadt, sadt-sample, smc --potential flow).")
@click.option("--alpha", type=float, default=option_default("alpha"), show_default=True,
              help="sadt selection ~ p exp(lambda ((1 - alpha) v_tree + alpha F_phi)).")
@click.option("--rollout", type=click.Choice(["q", "flow"]), default=option_default("rollout"), show_default=True,
              help="sadt: a new node's value is a q-rollout's reward, or F_phi (no rollout: 1 forward token).")
@click.option("--season", type=int, default=option_default("season"),
              help="Seasonal period of --series (e.g. 24 for hourly data): seasonal-naive and stats:* use it, "
                   "and MASE is scaled by the history's seasonal-naive error at this lag [default: lag 1].")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Draw the forecast as a PNG: history, sample fan and median, naive forecast, truth when known.")
@click.option("--out-csv", type=click.Path(dir_okay=False), default=None,
              help="Write the forecast in long format (unique_id, ds, METHOD, METHOD-lo-L, METHOD-hi-L), as "
                   "statsforecast does: the samples' median and quantile bands; ds from the file's dates.")
@click.option("--level", "levels", multiple=True, metavar="L",
              help="--out-csv: prediction intervals' levels in (0, 100): --level 80,95 or --level 80 --level 95.")
@placement_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
def search(prior, backbone, rewards, method, lam, out, save_tree, save_buffer, task, question, choices, max_chars,
           series, column, horizon, context_length, end, plot, out_csv, levels, quiet, device, dtype, n_gpu_layers,
           windows, **opts):
    """Search or sample from pi*(x) ~ p(x|c) exp(lambda r(x)) with one method."""
    from specdifftree.api import build_context, search_run
    from specdifftree.search.registry import get_method, methods_where

    from specdifftree import validate

    get_method(method)  # fail fast on a typo, before loading anything
    validate.task_options(task, question, choices, horizon, max_chars,
                          text_outputs={"--plot": plot, "--out-csv": out_csv})
    series, column = (list(v) if len(v) > 1 else (v[0] if v else None) for v in (series, column))
    if plot and (series is None or horizon is None):
        raise SDTError("--plot draws a forecast: it needs --series FILE.csv and --horizon H")
    if out_csv and (series is None or horizon is None):
        raise SDTError("--out-csv writes a forecast: it needs --series FILE.csv and --horizon H")
    if levels and not out_csv:
        raise SDTError("--level sets the intervals of --out-csv: add --out-csv FILE.csv")
    if levels:
        from specdifftree.experiments.long_format import check_levels

        check_levels(levels)
    if save_buffer and not get_method(method).soft_values:
        raise SDTError(f"--save-buffer needs {' or '.join(methods_where(soft_values=True))} (trees of soft values), "
                       f"not '{method}'")
    for path, what in ((out, "--out"), (save_tree, "--save-tree"), (save_buffer, "--save-buffer"), (plot, "--plot"),
                       (out_csv, "--out-csv")):
        validate.output_path(path, what)
    if windows != 1:
        from specdifftree.cli.windows import search_windows, window_contexts

        if windows < 1 or task != "forecast" or save_tree or plot or out_csv:
            raise SDTError("--windows N (N >= 1) searches forecast windows; --save-tree, --plot and --out-csv "
                           "take one window")
        search_windows(prior, window_contexts(windows, series, column, horizon, context_length, end),
                       method, quiet, out, save_buffer, reward=list(rewards), lam=lam, backbone=backbone,
                       placement=placement(device, dtype, n_gpu_layers), **opts)
        return
    if task == "forecast":
        context = build_context(series, column, horizon, context_length, end)
    else:
        from specdifftree.api import make_task, task_context

        context = task_context(make_task(task, question, choices, max_chars=max_chars), series, column,
                               context_length, end)
    run = search_run(prior, context, reward=list(rewards), method=method, lam=lam, backbone=backbone,
                     placement=placement(device, dtype, n_gpu_layers), progress=not quiet, **opts)
    if out:
        from specdifftree.files import write_json

        write_json(out, run.record())
    if save_tree:
        run.save_tree(save_tree)
    if save_buffer:
        run.save_buffer(save_buffer)
    if plot:
        run.plot(plot)
    if out_csv:
        from specdifftree.experiments.long_format import write_forecast_csv

        write_forecast_csv(out_csv, run.forecast[0], run.problem.context, method, levels)
    if not quiet and task != "forecast":
        print_summary(run.result, width=200)
        print_task_metrics(run.text[1])
    elif not quiet:
        print_summary(run.result)
        metrics = run.forecast[1]
        if metrics:
            from specdifftree.report import table

            click.echo("\nforecast metrics:\n" + table([metrics]))


def print_task_metrics(metrics: dict) -> None:
    """A caption or qa run's metrics in one row (qa: each choice's share as its own column)."""
    from specdifftree.report import table

    row = {k.replace("_", " "): v for k, v in metrics.items() if k != "shares"}
    row.update({f"share {c}": v for c, v in metrics.get("shares", {}).items()})
    click.echo("\ntask metrics:\n" + table([row]))


def print_summary(result, width: int = 60) -> None:
    """The run's cost and rewards in one row, and its five most frequent samples (their first `width` characters)."""
    import collections

    from specdifftree.report import table

    rewards = [s.reward for s in result.samples]
    row = {"method": result.method, "samples": len(rewards),
           "mean reward": sum(rewards) / max(len(rewards), 1), "best reward": max(rewards, default=float("nan")),
           **{k.replace("_", " "): v for k, v in result.stats().items() if not k.endswith("_bytes")}}  # memory: --out
    click.echo(table([row]))
    counts = collections.Counter(s.text for s in result.samples)
    reward_of = {s.text: s.reward for s in result.samples}
    top = [{"share": c / len(rewards), "reward": reward_of[t], "text": t[:width]} for t, c in counts.most_common(5)]
    click.echo("\nmost frequent samples:\n" + table(top))

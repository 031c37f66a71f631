"""The `sdt` command line. Heavy modules are imported inside each command so `sdt --help` is instant."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from specdifftree import __version__
from specdifftree.errors import SDTError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _default(field: str, config=None):
    """An option's default is its config dataclass's default (SearchConfig unless given): one place for both."""
    if config is None:
        from specdifftree.search.common import SearchConfig as config

    return config.__dataclass_fields__[field].default


def _presets(kind: str) -> list[str]:
    from specdifftree.config import preset_names

    return preset_names(kind)


def _amortize_default(field: str):
    from specdifftree.amortize.train import AmortizeConfig

    return _default(field, AmortizeConfig)


def _option_defaults(ctx: click.Context, data: dict, where: str) -> None:
    """Option defaults from a YAML mapping (keys are option names, e.g. `iterations`, `lam`), merged
    by the one precedence rule (config.py): command line > file > built-in defaults."""
    from specdifftree.config import merge, no_unknown

    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    no_unknown(data, {p.name for p in ctx.command.params if p.name}, where, "option")
    ctx.default_map = merge(ctx.default_map or {}, data)


def _load_yaml_defaults(ctx: click.Context, _param, path):
    """--config FILE.yaml: option defaults from a YAML file."""
    if path:
        from specdifftree.config import read_yaml

        _option_defaults(ctx, read_yaml(path), f"config {path}")
    return path


def _load_search_preset(ctx: click.Context, _param, name):
    """--preset NAME: option defaults from configs/search/NAME.yaml (a --config file wins over it)."""
    if name:
        from specdifftree.config import load_preset, merge

        before = ctx.default_map or {}
        ctx.default_map = {}
        _option_defaults(ctx, load_preset("search", name), f"search preset '{name}'")
        ctx.default_map = merge(ctx.default_map, before)
    return name


def placement_options(fn):
    """--device, --dtype and --n-gpu-layers: where a command that loads a prior runs its model."""
    fn = click.option("--n-gpu-layers", type=int, default=None,
                      help="gguf: layers offloaded to the GPU (-1: all) [default: all when the device is CUDA].")(fn)
    fn = click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
                      show_default=True, help="Model weights (auto: bfloat16 on CUDA, float32 elsewhere).")(fn)
    return click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:N]|mps",
                        help="Where the model, encoder, bias head, grammar mask and sampling run "
                             "(auto: CUDA when available).")(fn)


def _placement(device: str, dtype: str, n_gpu_layers):
    from specdifftree.prior.backbones.base import Placement

    return Placement(device, dtype, n_gpu_layers).validate()


@click.group(context_settings=CONTEXT, epilog="""\b
Examples:
  sdt search --prior markov:toy3 --method dts --iterations 2000 --samples 1000
  sdt bench exactness
Run `sdt COMMAND --help` for the options of each command.""")
@click.version_option(__version__, prog_name="sdt")
def cli():
    """SpecDiffTree: steer a time-series language model towards p(x|c) exp(lambda r(x)) at inference time."""


# ----------------------------------------------------------------------------------------- search


@cli.command(context_settings=CONTEXT, epilog="""\b
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
  # S-ADT: save DTS trees to a buffer, train a flow network (`sdt amortize`), then search with it
  sdt search --prior markov:toy3 --method dts --iterations 300 --save-buffer runs/buf.safetensors
  sdt search --prior markov:toy3 --method sadt-sample --flow runs/flow --samples 1000

\b
Output (--out): {"samples": [{"tokens", "text", "reward"}, ...],
                 "stats": {"forward_tokens", "model_calls", "wall_s", "tree_nodes", "host_kv_bytes",
                           "row_pool_bytes"}, ...}""")
@click.option("--config", type=click.Path(dir_okay=False), callback=_load_yaml_defaults, is_eager=True,
              expose_value=False, help="YAML file of option defaults (command line wins).")
@click.option("--preset", type=click.Choice(_presets("search")), callback=_load_search_preset, is_eager=True,
              expose_value=False, help="Option defaults from configs/search/NAME.yaml (--config and the command line win).")
@click.option("--prior", "prior", required=True, metavar="SPEC",
              help="markov:FILE.json | markov:NAME (built-in) | default | hf:ID_OR_PATH | gguf:FILE | "
                   "opentslm:CKPT | checkpoint DIR.")
@click.option("--backbone", default=None, metavar="hf:LLM_DIR",
              help="The LLM of an opentslm:CKPT prior (or one replacing a checkpoint DIR's).")
@click.option("--reward", "rewards", multiple=True, metavar="SPEC",
              help="spectral | format | length | smoothness | bounds | caption-consistency | FILE.py:fn | module:fn; "
                   "terms join with '+', weights as 0.5*NAME; repeatable (summed).")
@click.option("--method", default="dts", show_default=True, metavar="NAME",
              help="dts, dts-star, greedy, sample, best-of-n, best-of-n-is, beam, smc, mcts, sadt, sadt-sample; "
                   "reference forecasters: naive, seasonal-naive, stats:auto-ets, stats:auto-theta.")
@click.option("--iterations", type=int, default=_default("iterations"), show_default=True, help="Tree iterations (dts, dts-star, mcts).")
@click.option("--samples", type=int, default=_default("samples"), show_default=True, help="Sequences returned.")
@click.option("--lambda", "lam", type=float, default=None, help="Inverse temperature lambda of pi* [default: 1.0].")
@click.option("--seed", type=int, default=_default("seed"), show_default=True)
@click.option("--budget", type=int, default=None, help="Cap on forward tokens (compare methods at equal cost).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the result as JSON here.")
@click.option("--save-tree", type=click.Path(dir_okay=False), default=None, help="Export the tree as GraphML.")
@click.option("--save-buffer", type=click.Path(dir_okay=False), default=None,
              help="Append the finished tree (dts, dts-star) to this search buffer, for `sdt amortize`.")
@click.option("--series", type=click.Path(), default=None, help="CSV of the context series (for spectral rewards).")
@click.option("--column", default=None, help="Column of --series (default: its only numeric column).")
@click.option("--horizon", type=int, default=None, help="Values the forecast should hold.")
@click.option("--context-length", type=int, default=None, help="Use the N points of --series before --end.")
@click.option("--end", type=int, default=None, help="Index one past the last context point [default: end of file];"
              " the H points after it, when present, are the ground truth for metrics.")
@click.option("--batch-size", type=int, default=_default("batch_size"), show_default=True, help="Leaves per round (batched rollouts).")
@click.option("--widen-c", type=float, default=_default("widen_c"), show_default=True, help="Progressive widening C.")
@click.option("--widen-alpha", type=float, default=_default("widen_alpha"), show_default=True, help="Progressive widening alpha.")
@click.option("--c-uct", type=float, default=_default("c_uct"), show_default=True, help="Exploration constant (dts-star, mcts).")
@click.option("--child-weight", type=click.Choice(["prior", "count"]), default=_default("child_weight"), show_default=True,
              help="Child weight in DTS: p(a|s) over explored tokens, or draw multiplicity.")
@click.option("--temperature", type=float, default=_default("temperature"), show_default=True)
@click.option("--top-k", type=int, default=_default("top_k"), show_default=True, help="0 = off.")
@click.option("--top-p", type=float, default=_default("top_p"), show_default=True, help="1 = off.")
@click.option("--n", "n", type=int, default=_default("n"), show_default=True, help="Best-of-N candidates per batch.")
@click.option("--beam-width", type=int, default=_default("beam_width"), show_default=True)
@click.option("--particles", type=int, default=_default("particles"), show_default=True, help="SMC particles.")
@click.option("--ess-threshold", type=float, default=_default("ess_threshold"), show_default=True, help="SMC resamples below this ESS fraction.")
@click.option("--potential", type=click.Choice(["partial", "none", "flow"]), default=_default("potential"), show_default=True,
              help="SMC twist: reward of the partial decode, none, or the flow network's F_phi (--flow).")
@click.option("--flow", type=click.Path(file_okay=False), default=_default("flow"),
              help="Flow network from `sdt amortize` (sadt, sadt-sample, smc --potential flow).")
@click.option("--alpha", type=float, default=_default("alpha"), show_default=True,
              help="sadt selection ~ p exp(lambda ((1 - alpha) v_tree + alpha F_phi)).")
@click.option("--rollout", type=click.Choice(["q", "flow"]), default=_default("rollout"), show_default=True,
              help="sadt: a new node's value is a q-rollout's reward, or F_phi (no rollout: 1 forward token).")
@click.option("--season", type=int, default=_default("season"),
              help="Seasonal period of --series (e.g. 24 for hourly data): seasonal-naive and stats:* use it, "
                   "and MASE is scaled by the history's seasonal-naive error at this lag [default: lag 1].")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Draw the forecast as a PNG: history, sample fan and median, naive forecast, truth when known.")
@placement_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
def search(prior, backbone, rewards, method, lam, out, save_tree, save_buffer, series, column, horizon,
           context_length, end, plot, quiet, device, dtype, n_gpu_layers, **opts):
    """Search or sample from pi*(x) ~ p(x|c) exp(lambda r(x)) with one method."""
    from specdifftree.api import search_problem
    from specdifftree.problem import Queries, build_context, forecast_record
    from specdifftree.search.common import SearchConfig
    from specdifftree.search.registry import get_method, methods_where

    get_method(method)  # fail fast on a typo, before loading anything
    if plot and (series is None or horizon is None):
        raise SDTError("--plot draws a forecast: it needs --series FILE.csv and --horizon H")
    if save_buffer and not get_method(method).soft_values:
        raise SDTError(f"--save-buffer needs {' or '.join(methods_where(soft_values=True))} (trees of soft values), "
                       f"not '{method}'")
    context = build_context(series, column, horizon, context_length, end)
    queries = Queries.open(prior, list(rewards), lam, backbone=backbone,
                           placement=_placement(device, dtype, n_gpu_layers))
    cfg = SearchConfig(lam=queries.lam, **opts).validate()
    problem = queries.problem(context)
    result = search_problem(problem, method, cfg, rewards=list(rewards), progress=not quiet)
    samples, metrics = forecast_record(result, context, season=cfg.season)
    record = {**result.to_dict(), "samples": samples, "forecast_metrics": metrics,
              "prior": problem.prior.describe(), "config": {"prior": prior, "backbone": backbone, "reward": list(rewards),
                                                     **cfg.to_dict()}}
    if out:
        from specdifftree.files import write_json

        write_json(out, record)
    if save_tree:
        if result.tree is None:
            raise SDTError(f"--save-tree needs a tree method (dts, dts-star, mcts), not '{method}'")
        from specdifftree.search.tree import save_graphml

        save_graphml(result.tree, save_tree)
    if save_buffer:
        from specdifftree.amortize.buffer import save_search

        save_search(save_buffer, problem, result, prior=prior, rewards=list(rewards), lam=cfg.lam, cfg=cfg)
    if plot:
        from specdifftree.experiments.plots import plot_forecast
        from specdifftree.problem import forecast_matrix

        title = f"{Path(series).name} {context.meta.get('column') or ''} end={context.meta['end']}: {method}"
        plot_forecast(context.series, context.target, forecast_matrix(samples, horizon), horizon, plot, title)
    if not quiet:
        _print_summary(result)
        if metrics:
            from specdifftree.report import table

            click.echo("\nforecast metrics:\n" + table([metrics]))


def _print_summary(result) -> None:
    import collections

    from specdifftree.report import table

    rewards = [s.reward for s in result.samples]
    row = {"method": result.method, "samples": len(rewards),
           "mean reward": sum(rewards) / max(len(rewards), 1), "best reward": max(rewards, default=float("nan")),
           **{k.replace("_", " "): v for k, v in result.stats().items() if not k.endswith("_bytes")}}  # memory: --out
    click.echo(table([row]))
    counts = collections.Counter(s.text for s in result.samples)
    reward_of = {s.text: s.reward for s in result.samples}
    top = [{"share": c / len(rewards), "reward": reward_of[t], "text": t[:60]} for t, c in counts.most_common(5)]
    click.echo("\nmost frequent samples:\n" + table(top))


# ----------------------------------------------------------------------------------------- amortize


@cli.command(context_settings=CONTEXT, epilog="""\b
Examples:
  # an enumerable problem end to end: DTS trees -> buffer -> flow network -> sampling from q
  sdt search --prior markov:toy3 --method dts --iterations 300 --save-buffer runs/toy3.buf -q
  sdt amortize --buffer runs/toy3.buf --prior markov:toy3 --out runs/toy3-flow --steps 400 --no-wandb
  sdt search --prior markov:toy3 --method sadt-sample --flow runs/toy3-flow --samples 2000
  # forecasting: one DTS tree per training window (a buffer accumulates), then a flow for them
  sdt search --prior default --series ETTh1.csv --column OT --end 11000 --context-length 96 --horizon 24 \\
      --reward spectral --method dts --iterations 200 --save-buffer runs/ett.buf -q     # repeat per --end
  sdt amortize --buffer runs/ett.buf --prior default --reward spectral --lambda 1.0 --out runs/flow
  sdt search --prior default ... --method sadt --flow runs/flow --iterations 50
  # after a crash or kill: continue from the last committed step, to the same checkpoint bytes
  sdt amortize --buffer runs/ett.buf --prior default --reward spectral --out runs/flow --resume
  # data parallel on 2 processes (DDP, gloo on CPU)
  torchrun --nproc-per-node 2 .venv/bin/sdt amortize --buffer runs/ett.buf --prior default --out runs/flow
Writes OUT/weights.safetensors + OUT/config.json (the best network by held-out trajectory balance;
the prior's fingerprint, vocabulary, reward and lambda it is valid for), OUT/tracking.jsonl and
OUT/state.safetensors (the resume state, committed every --save-every steps).""")
@click.option("--config", type=click.Path(dir_okay=False), callback=_load_yaml_defaults, is_eager=True,
              expose_value=False, help="YAML file of option defaults (command line wins).")
@click.option("--buffer", "buffers", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Search buffer from `sdt search --save-buffer` (repeatable).")
@click.option("--prior", required=True, metavar="SPEC", help="The prior the buffers were made with.")
@click.option("--backbone", default=None, metavar="hf:LLM_DIR", help="As in `sdt search` (opentslm: priors).")
@click.option("--reward", "rewards", multiple=True, metavar="SPEC", help="The reward, as in `sdt search`.")
@click.option("--lambda", "lam", type=float, default=None,
              help="As in `sdt search` [default: the built-in problem's, else 1.0].")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Flow network directory.")
@click.option("--steps", type=int, default=_amortize_default("steps"), show_default=True, help="Gradient steps.")
@click.option("--lr", type=float, default=_amortize_default("lr"), show_default=True, help="Learning rate (value head).")
@click.option("--lr-log-z", type=float, default=_amortize_default("lr_log_z"), show_default=True)
@click.option("--batch-size", type=int, default=_amortize_default("batch_size"), show_default=True,
              help="Trajectories per step.")
@click.option("--hidden", type=int, default=_amortize_default("hidden"), show_default=True, help="MLP width.")
@click.option("--on-policy", type=float, default=_amortize_default("on_policy"), show_default=True,
              help="Share of a batch drawn from q (tempered).")
@click.option("--replay", type=float, default=_amortize_default("replay"), show_default=True,
              help="Share of a batch replayed from the best draws so far.")
@click.option("--value-weight", type=float, default=_amortize_default("value_weight"), show_default=True,
              help="Weight of detailed balance against the trees' values (0: trajectory balance only).")
@click.option("--val-fraction", type=float, default=_amortize_default("val_fraction"), show_default=True,
              help="Share of contexts held out for validation.")
@click.option("--eval-every", type=int, default=_amortize_default("eval_every"), show_default=True)
@click.option("--save-every", type=int, default=_amortize_default("save_every"), show_default=True,
              help="Steps between commits of the resume state (OUT/state.safetensors).")
@click.option("--seed", type=int, default=_amortize_default("seed"), show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last committed step (after a kill).")
@click.option("--wandb/--no-wandb", default=True, show_default=True,
              help="Mirror metrics to W&B (offline unless logged in); the local record is always written.")
@placement_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
def amortize(buffers, prior, backbone, rewards, lam, out_dir, resume, wandb, quiet, device, dtype, n_gpu_layers,
             **opts):
    """Train a flow network F_phi (S-ADT) by trajectory balance on search buffers."""
    from specdifftree.amortize.train import AmortizeConfig
    from specdifftree.api import open_prior, train_flow

    placement = _placement(device, dtype, n_gpu_layers)
    source = prior if backbone is None else open_prior(prior, placement, backbone)
    summary = train_flow(list(buffers), source, list(rewards), out_dir, lam=lam, cfg=AmortizeConfig(**opts),
                         progress=not quiet, wandb=wandb, placement=placement, resume=resume)
    if not quiet and summary:  # under torchrun rank 0 reports
        from specdifftree.report import table

        click.echo(table([{k: v for k, v in summary.items() if not isinstance(v, (dict, list))}]))


# ----------------------------------------------------------------------------------------- backbones


@cli.command("pretrain-backbone", context_settings=CONTEXT, epilog="""\b
Examples:
  sdt pretrain-backbone --out runs/backbone            # the default preset (minutes on 2 cores)
  sdt pretrain-backbone --out /tmp/bb --preset tiny    # seconds, for tests
  sdt pretrain-backbone --out runs/deep8 --preset deep8 --device cuda   # a larger recipe on a GPU
The directory loads with AutoModelForCausalLM / AutoTokenizer.from_pretrained(DIR).""")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--preset", type=click.Choice(_presets("backbone")), default="default", show_default=True,
              help="configs/backbone/NAME.yaml.")
@click.option("--seed", type=int, default=None, help="Override the preset's seed.")
@click.option("--device", default="cpu", show_default=True, metavar="cpu|cuda[:N]|mps|auto",
              help="Where the training steps run, in float32. The committed backbones are CPU builds: "
                   "another device trains on the same batches but gives other weights (float reductions "
                   "differ), so the recorded prefix hashes hold on the CPU only.")
def pretrain_backbone_cmd(out_dir, preset, seed, device):
    """Build the embedded default backbone (small Llama, digit-level tokenizer) as a transformers directory."""
    from specdifftree.prior.default import pretrain_backbone

    path = pretrain_backbone(out_dir, preset=preset, seed=seed, progress=True, device=device)
    click.echo(f"wrote {path}")


@cli.command("export-gguf", context_settings=CONTEXT, epilog="""\b
Examples:
  sdt export-gguf runs/backbone --out runs/backbone.gguf
  sdt search --prior gguf:runs/backbone.gguf --series ETTh1.csv --column OT --horizon 24 --reward spectral""")
@click.argument("hf_dir", type=click.Path())
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="GGUF file to write.")
@click.option("--dtype", type=click.Choice(["f32", "f16"]), default="f32", show_default=True)
def export_gguf_cmd(hf_dir, out_path, dtype):
    """Convert a transformers Llama directory to a GGUF file that llama.cpp loads."""
    from specdifftree.prior.gguf import export_gguf

    click.echo(f"wrote {export_gguf(hf_dir, out_path, dtype=dtype)}")


@cli.group(context_settings=CONTEXT)
def convert():
    """Convert checkpoints of other tools into SpecDiffTree's pickle-free format."""


@convert.command("opentslm", context_settings=CONTEXT, epilog="""\b
Examples:
  huggingface-cli download OpenTSLM/llama-3.2-1b-m4-sp model_checkpoint.pt --local-dir ckpt/m4-sp
  huggingface-cli download meta-llama/Llama-3.2-1B --local-dir llm/Llama-3.2-1B
  sdt convert opentslm ckpt/m4-sp --backbone hf:llm/Llama-3.2-1B --out priors/m4-sp
  sdt search --prior priors/m4-sp --series ETTh1.csv --column OT --horizon 24 --reward spectral
The pickle is read once, safely (tensors, plain containers and peft's LoraConfig as data only).""")
@click.argument("ckpt", type=click.Path(exists=True))
@click.option("--backbone", default=None, metavar="hf:LLM_DIR",
              help="The base LLM [default: from the name, e.g. llama-3.2-1b -> hf:meta-llama/Llama-3.2-1B].")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Checkpoint directory to write.")
def convert_opentslm(ckpt, backbone, out_dir):
    """An OpenTSLM-SP model_checkpoint.pt -> weights.safetensors + config.json (encoder, projector, LoRA)."""
    from specdifftree.api import convert_opentslm

    click.echo(f"wrote {convert_opentslm(ckpt, out_dir, backbone)}")


# ----------------------------------------------------------------------------------------- training


@cli.command("train-prior", context_settings=CONTEXT, epilog="""\b
Examples:
  sdt train-prior --stage all --preset smoke --out runs/prior      # six stages, minutes on 2 cores
  sdt train-prior --stage all --out runs/prior --resume            # continue after a crash or kill
  sdt train-prior --stage stage6_forecast --backbone hf:runs/bb --out runs/p6 --no-wandb
  sdt train-prior --stage all --upstream --out runs/prior-upstream  # the official data (network)
  sdt train-prior --stage all --variant sp --preset smoke --out runs/prior-sp   # OpenTSLM-SP
  torchrun --nproc-per-node 2 .venv/bin/sdt train-prior --stage stage6_forecast --out runs/p6  # DDP
  sdt search --prior runs/prior --series ETTh1.csv --column OT --horizon 24 --reward spectral
Stages: stage1_mcq stage2_captioning stage3_cot stage4_sleep_cot stage5_ecg_cot stage6_forecast.
Writes OUT/<stage>/{checkpoints/best, metrics.csv, *.png, index.html, test_predictions.jsonl},
OUT/summary.json and OUT/train_prior.json (what `--prior OUT` loads).""")
@click.option("--config", type=click.Path(dir_okay=False), callback=_load_yaml_defaults, is_eager=True,
              expose_value=False, help="YAML file of option defaults (command line wins).")
@click.option("--stage", default="all", show_default=True, help="all, or one stage name.")
@click.option("--preset", type=click.Choice(_presets("train")), default="default", show_default=True,
              help="configs/train/NAME.yaml: data sizes, epochs and encoder size (test: seconds, for tests).")
@click.option("--backbone", default="default", show_default=True, help="default | hf:DIR | gguf:FILE (frozen).")
@click.option("--out", "out_dir", default="runs/prior", show_default=True, type=click.Path(file_okay=False))
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last completed epoch.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--wandb/--no-wandb", default=True, show_default=True,
              help="Mirror metrics to W&B (offline unless logged in); the local record is always written.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Real datasets folder [default: ../shared/data when it exists].")
@click.option("--install-default", is_flag=True,
              help="When the run is finished, install its prior as what `--prior default` means "
                   "(same as `sdt prior install OUT`; undo with `sdt prior uninstall`).")
@click.option("--upstream", is_flag=True,
              help="Stages 1-5 from the official OpenTSLM data (downloaded on first use into "
                   "$SDT_HOME/upstream; needs the network); stage 6 reads M4 and ETT either way.")
@click.option("--variant", type=click.Choice(["bias", "sp"]), default="bias", show_default=True,
              help="bias: encoder + logit-bias head over cached LLM logits; sp: encoder + soft-prompt "
                   "projector through the LLM (OpenTSLM-SP, its hyperparameters; transformers backbones).")
@click.option("--lora", is_flag=True, help="sp: also train LoRA adapters on the LLM from stage 3 on (r 16, alpha 32).")
@placement_options
def train_prior_cmd(stage, preset, backbone, out_dir, resume, seed, wandb, data_dir, install_default, upstream,
                    variant, lora, device, dtype, n_gpu_layers):
    """Train the prior's encoder and logit-bias head (or soft-prompt projector) stage by stage, the LLM frozen."""
    from specdifftree.data.example import STAGES
    from specdifftree.report import table
    from specdifftree.train.config import TrainConfig
    from specdifftree.train.trainer import train_prior

    from specdifftree.paths import default_data_dir

    stages = list(STAGES) if stage == "all" else [stage]
    cfg = TrainConfig.from_name(preset).for_variant(variant, lora)
    summary = train_prior(stages, cfg, backbone, Path(out_dir), seed=seed,
                          resume=resume, wandb=wandb, data_dir=data_dir or default_data_dir(), upstream=upstream,
                          placement=_placement(device, dtype, n_gpu_layers))
    if not summary:  # a torchrun rank other than 0: rank 0 reports (and installs)
        return
    keys = ("stage", "test_nll_prior", "test_nll_backbone", "test_accuracy", "test_accuracy_backbone",
            "chance_uniform", "chance_majority", "best_epoch", "wall_s")
    click.echo(table([{k: s.get(k, "") for k in keys} for s in summary.values()]))
    click.echo(f"wrote {out_dir}/summary.json")
    if install_default:
        _install(out_dir)


def _install(source) -> None:
    from specdifftree.prior.checkpoint import install_prior

    target = install_prior(source)
    click.echo(f"installed {source} at {target}: `--prior default` now means this trained prior "
               "(undo with `sdt prior uninstall`)")


# ----------------------------------------------------------------------------------------- prior


@cli.group(context_settings=CONTEXT, epilog="""\b
Examples:
  sdt train-prior --stage all --preset smoke --out runs/prior --no-wandb
  sdt prior install runs/prior        # `--prior default` now means this trained prior
  sdt prior uninstall                 # back to the embedded backbone alone""")
def prior():
    """Which trained prior `--prior default` means: install one, or go back to the backbone alone."""


@prior.command("install", context_settings=CONTEXT)
@click.argument("source", type=click.Path(exists=True, file_okay=False))
def prior_install(source):
    """Install a prior checkpoint DIR, or a finished `sdt train-prior --out` run, as `--prior default`."""
    _install(source)


@prior.command("uninstall", context_settings=CONTEXT)
def prior_uninstall():
    """Remove the installed prior: `--prior default` is the embedded backbone with fresh parts again."""
    from specdifftree.prior.checkpoint import uninstall_prior

    where = uninstall_prior()
    click.echo(f"removed {where}" if where else "no prior was installed")


# ----------------------------------------------------------------------------------------- captions


@cli.command("caption", context_settings=CONTEXT, epilog="""\b
Examples:
  # the three axes of a chest accelerometer, activity spans from the file's labels
  sdt caption ../shared/data/har_chest_acc/1.csv
  # one column of a CSV with a header, sampled hourly, statistics and structure only
  sdt caption ../shared/data/ett/ETTh1.csv --column OT --fs 0.000277778 --level middle+low
  # an ECG record (WFDB), beat annotations as level 3, as JSON for a training set
  sdt caption ../shared/data/ecg/100.hea --json > captions.json
Levels: low (statistics), middle (trends and spikes), high (labelled events); variants
high-summary, high-all, middle+low, high+low, high+middle, all. Without --level every level is
printed on its own line.""")
@click.argument("file", type=click.Path())
@click.option("--column", "columns", multiple=True, help="Channel to caption (repeatable) [default: all numeric].")
@click.option("--level", default=None, metavar="LEVEL", help="low | middle | high | a variant (see below).")
@click.option("--fs", type=float, default=None, help="Sampling rate in Hz [default: the file's, else points].")
@click.option("--label-column", default=None, help="CSV column of activity labels (level 3).")
@click.option("--seed", type=int, default=0, show_default=True, help="Template choice.")
@click.option("--json", "as_json", is_flag=True, help="Print levels, variants and facts as JSON.")
def caption_cmd(file, columns, level, fs, label_column, seed, as_json):
    """Caption a series at three levels: statistical, structural and semantic (SensorLM style)."""
    from specdifftree.data.captions import LEVELS, VARIANTS, caption_series, load_captioned, resolve_variant

    series = load_captioned(file, columns, fs, label_column)
    captions = caption_series(series, seed)
    variants = [resolve_variant(level)] if level else list(VARIANTS)
    if as_json:
        click.echo(json.dumps({
            "file": str(file), "channels": list(series.channels), "units": series.units, "fs": series.fs,
            "points": series.length, "time_unit": captions.unit,
            "levels": {k: [s.text for s in v] for k, v in captions.levels.items()},
            "captions": {v: captions.text(v) for v in variants},
            "facts": {v: [f.to_dict() for f in captions.facts(v)] for v in variants}}, indent=2))
        return
    if level:
        click.echo(captions.text(variants[0]))
        return
    names = {"low": "level 1 (statistical)", "middle": "level 2 (structural)", "high": "level 3 (semantic)"}
    for key in LEVELS:
        text = " ".join(s.text for s in captions.levels[key]) or "(no labels in this file)"
        click.echo(f"{names[key]}: {text}")


# ----------------------------------------------------------------------------------------- bench


@cli.group(context_settings=CONTEXT, epilog="""\b
Examples:
  sdt bench exactness --problem toy3 --seeds 3
  sdt bench speed --backbone default""")
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
    budget_list = _int_list(budgets, "--budgets") if budgets else None
    rows = run_exactness(list(problems), budget_list, [m.strip() for m in methods.split(",") if m.strip()],
                         samples, seeds, progress=not as_json, child_weight=child_weight)
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
  sdt bench speed --backbone gguf:runs/bb.gguf --batch 32 --iterations 128 --json""")
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
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@placement_options
def speed(backbone, shape, layers, backend, series, column, context_length, horizon, node_memory, as_json, device,
          dtype, n_gpu_layers, **opts):
    """DTS token throughput vs plain batched sampling on the same model, forward tokens per new token, memory."""
    from specdifftree.bench.speed import (SpeedConfig, add_long_prompt, bench_spec, bench_window,
                                          context_for_prompt, speed_report, summary)
    from specdifftree.problem import Queries

    cfg = SpeedConfig(**opts)
    if shape is not None:
        from specdifftree.bench.shapes import shape_dir

        backbone = f"hf:{shape_dir(shape, layers)}"
    elif layers is not None:
        raise SDTError("--layers cuts a --shape; give --shape NAME")
    spec = bench_spec(backbone, backend)
    window = bench_window(series, column, context_length, horizon)
    queries = Queries.open(spec, ["spectral"], placement=_placement(device, dtype, n_gpu_layers))
    problem = queries.problem(window.context())
    report = speed_report(problem, cfg)
    if shape is not None:
        report["shape"], report["layers"] = shape, layers
    if cfg.long_prompt:  # the same backbone, loaded once, on a longer prompt
        ctx = context_for_prompt(problem.prior.backbone, series, column, horizon, cfg.long_prompt)
        add_long_prompt(report, queries.problem(ctx), cfg)
    if node_memory:  # whole searches in child processes: their peak RSS is theirs alone
        from specdifftree.bench.memory import node_memory as measure

        placement = ("--device", device, "--dtype", dtype,
                     *(("--n-gpu-layers", str(n_gpu_layers)) if n_gpu_layers is not None else ()))
        report["node_memory"] = measure(spec, window, placement)
    click.echo(json.dumps(report, indent=1) if as_json else summary(report))


def _int_list(text: str, what: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SDTError(f"{what} must be comma-separated integers, got '{text}'") from None
    if not vals or min(vals) < 1:
        raise SDTError(f"{what} must be positive integers")
    return vals


# ----------------------------------------------------------------------------------------- experiments


@cli.group(context_settings=CONTEXT, epilog="""\b
Examples:
  sdt experiment run experiments/sadt_table.yaml --preset smoke
  sdt compare runs/sadt_table-smoke""")
def experiment():
    """Grids of methods x budgets x datasets x seeds on real series: results.csv, run records, W&B runs."""


@experiment.command("run", context_settings=CONTEXT, epilog="""\b
Examples:
  sdt experiment run experiments/sadt_table.yaml --preset smoke     # writes runs/sadt_table-smoke
  sdt experiment run experiments/sadt_table.yaml --out runs/table --no-wandb
  sdt experiment run experiments/sadt_table.yaml --preset smoke --ray          # cells as Ray tasks, here
  sdt experiment run experiments/sadt_table.yaml --ray auto --out /shared/runs/t  # on a running cluster
  sdt compare runs/table
A rerun skips finished cells, so a killed run resumes where it stopped. W&B runs are offline
unless you are logged in; upload them later with `wandb sync DIR/cells/*/wandb/offline-run-*`.""")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output directory [default: runs/NAME or runs/NAME-PRESET].")
@click.option("--preset", default=None, help="A preset of the experiment file (e.g. smoke).")
@click.option("--prior", default=None, metavar="SPEC", help="Override the file's prior (default | DIR | hf:... | gguf:...).")
@click.option("--wandb/--no-wandb", default=True, show_default=True, help="Mirror each cell to W&B (offline unless logged in).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Run each cell as a Ray task (pip install -e '.[ray]'): --ray alone starts Ray here, "
                   "--ray auto joins a running cluster, --ray ray://HOST:10001 uses Ray Client.")
def experiment_run(config, out_dir, preset, prior, wandb, ray_address):
    """Run every cell of an experiment file that has no record yet."""
    from specdifftree.api import run_experiment
    from specdifftree.experiments.runner import summary_table

    done = run_experiment(config, preset, out_dir, prior=prior, wandb=wandb, log=lambda m: click.echo(m, err=True),
                          ray=ray_address)
    click.echo(summary_table(done.rows))
    click.echo(f"\n{len(done.ran)} cell(s) run, {len(done.skipped)} already finished; "
               f"results: {done.out_dir / 'results.csv'}")


@cli.command("compare", context_settings=CONTEXT, epilog="""\b
Examples:
  sdt compare runs/sadt_table-smoke                       # table + plots in runs/sadt_table-smoke/compare
  sdt compare runs/table-a runs/table-b --out runs/plots
  sdt compare --wandb-project me/specdifftree             # online W&B runs (needs a login)""")
@click.argument("dirs", nargs=-1, type=click.Path(file_okay=False))
@click.option("--wandb-project", default=None, metavar="P", help="Also read the experiment runs of this W&B project.")
@click.option("--out", "plot_dir", type=click.Path(file_okay=False), default=None,
              help="Where plots and table.md go [default: DIR/compare].")
def compare_cmd(dirs, wandb_project, plot_dir):
    """Mean and standard error over seeds of experiment cells, as a markdown table, with plots."""
    from specdifftree.experiments.compare import compare

    result = compare(list(dirs), plot_dir, wandb_project)
    click.echo(result.table)
    for note in result.notes:
        click.echo(note, err=True)
    click.echo("\nplots:\n" + "\n".join(f"  {name}: {path}" for name, path in result.plots.items()))


# ----------------------------------------------------------------------------------------- entry


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit with code 2, never a traceback."""
    try:
        code = cli.main(args=argv, prog_name="sdt", standalone_mode=False)
    except SDTError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

"""`sdt amortize`: train a flow network (S-ADT) on search buffers; a thin layer over `api.train_flow`."""

from __future__ import annotations

import click

from specdifftree.cli.options import CONTEXT, amortize_default, load_yaml_defaults, placement, placement_options


@click.command(context_settings=CONTEXT, epilog="""\b
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
the prior's weights sha256, vocabulary, reward and lambda it is valid for), OUT/tracking.jsonl and
OUT/state.safetensors (the resume state, committed every --save-every steps).""")
@click.option("--config", type=click.Path(dir_okay=False), callback=load_yaml_defaults, is_eager=True,
              expose_value=False, help="YAML file of option defaults (command line wins).")
@click.option("--buffer", "buffers", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Search buffer from `sdt search --save-buffer` (repeatable).")
@click.option("--prior", required=True, metavar="SPEC", help="The prior the buffers were made with.")
@click.option("--backbone", default=None, metavar="hf:LLM_DIR", help="As in `sdt search` (opentslm: priors).")
@click.option("--reward", "rewards", multiple=True, metavar="SPEC", help="The reward, as in `sdt search`.")
@click.option("--lambda", "lam", type=float, default=None,
              help="As in `sdt search` [default: the built-in problem's, else 1.0].")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Flow network directory.")
@click.option("--steps", type=int, default=amortize_default("steps"), show_default=True, help="Gradient steps.")
@click.option("--lr", type=float, default=amortize_default("lr"), show_default=True, help="Learning rate (value head).")
@click.option("--lr-log-z", type=float, default=amortize_default("lr_log_z"), show_default=True)
@click.option("--batch-size", type=int, default=amortize_default("batch_size"), show_default=True,
              help="Trajectories per step.")
@click.option("--hidden", type=int, default=amortize_default("hidden"), show_default=True, help="MLP width.")
@click.option("--on-policy", type=float, default=amortize_default("on_policy"), show_default=True,
              help="Share of a batch drawn from q (tempered).")
@click.option("--replay", type=float, default=amortize_default("replay"), show_default=True,
              help="Share of a batch replayed from the best draws so far.")
@click.option("--value-weight", type=float, default=amortize_default("value_weight"), show_default=True,
              help="Weight of detailed balance against the trees' values (0: trajectory balance only).")
@click.option("--val-fraction", type=float, default=amortize_default("val_fraction"), show_default=True,
              help="Share of contexts held out for validation.")
@click.option("--eval-every", type=int, default=amortize_default("eval_every"), show_default=True)
@click.option("--save-every", type=int, default=amortize_default("save_every"), show_default=True,
              help="Steps between commits of the resume state (OUT/state.safetensors).")
@click.option("--seed", type=int, default=amortize_default("seed"), show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last committed step (after a kill).")
@click.option("--wandb/--no-wandb", default=True, show_default=True,
              help="Mirror metrics to W&B (offline unless logged in); the local record is always written.")
@placement_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
def amortize(buffers, prior, backbone, rewards, lam, out_dir, resume, wandb, quiet, device, dtype, n_gpu_layers,
             **opts):
    """Train a flow network F_phi (S-ADT) by trajectory balance on search buffers."""
    from specdifftree.amortize.pipeline import check_flow_inputs
    from specdifftree.amortize.train import AmortizeConfig
    from specdifftree.api import open_prior, train_flow

    cfg = AmortizeConfig(**opts).validate()
    if backbone is not None:  # the prior opens here: its inputs checked first (train_flow checks them otherwise)
        check_flow_inputs(list(buffers), prior, list(rewards), out_dir, backbone)
    where = placement(device, dtype, n_gpu_layers)
    source = prior if backbone is None else open_prior(prior, where, backbone)
    summary = train_flow(list(buffers), source, list(rewards), out_dir, lam=lam, cfg=cfg,
                         progress=not quiet, wandb=wandb, placement=where, resume=resume)
    if not quiet and summary:  # under torchrun rank 0 reports
        from specdifftree.report import table

        click.echo(table([{k: v for k, v in summary.items() if not isinstance(v, (dict, list))}]))

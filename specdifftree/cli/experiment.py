"""`sdt experiment run` (a grid of methods x budgets x datasets x seeds) and `sdt compare` (their
tables and plots); thin layers over `api.run_experiment` and experiments/compare.py."""

from __future__ import annotations

import click

from specdifftree.cli.options import CONTEXT


@click.group(context_settings=CONTEXT, epilog="""\b
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


@click.command("compare", context_settings=CONTEXT, epilog="""\b
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

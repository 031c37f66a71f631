"""The `sdt` command line: the click group and `main`. Each command lives in the module of its group
(search, amortize, train, convert, caption, bench, experiment, data) and is a thin call of a public API
function; heavy modules are imported inside each command so `sdt --help` is instant."""

from __future__ import annotations

import sys

import click

from specdifftree import __version__
from specdifftree.cli import amortize, bench, caption, convert, data, experiment, search, sensorlm, train
from specdifftree.cli.options import CONTEXT
from specdifftree.errors import SDTError


@click.group(context_settings=CONTEXT, epilog="""\b
Examples:
  sdt search --prior markov:toy3 --method dts --iterations 2000 --samples 1000
  sdt bench exactness
Run `sdt COMMAND --help` for the options of each command.""")
@click.version_option(__version__, prog_name="sdt")
def cli():
    """SpecDiffTree: steer a time-series language model towards p(x|c) exp(lambda r(x)) at inference time."""
    from specdifftree.prior.backbones.base import steady_host_memory

    steady_host_memory()  # once per process: glibc's mmap threshold fixed, so freed [B, V] rows leave RSS


for command in (search.search, amortize.amortize, train.pretrain_backbone_cmd, train.train_prior_cmd, train.prior,
                convert.export_gguf_cmd, convert.convert, caption.caption_cmd, bench.bench, experiment.experiment,
                experiment.compare_cmd, data.data, sensorlm.sensorlm):
    cli.add_command(command)


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


__all__ = ["cli", "main"]

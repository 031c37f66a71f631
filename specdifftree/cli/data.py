"""`sdt data list` and `sdt data download`: the public datasets the package reads (data/download.py)."""

from __future__ import annotations

import click

from specdifftree.cli.options import CONTEXT


@click.group(context_settings=CONTEXT, epilog="""\b
Examples:
  sdt data list
  sdt data download ett                 # ETTh1, ETTh2, ETTm1, ETTm2 into $SDT_DATA_DIR
  sdt data download m4-hourly ecg
  sdt data download all
Loaders read shared/data beside a checkout where it exists, then the download cache
($SDT_DATA_DIR, default $SDT_HOME/data, i.e. ~/.cache/specdifftree/data).""")
def data():
    """The public datasets (ETT, M4, chest accelerometer, ECG): where each is found, and downloads."""


@data.command("list", context_settings=CONTEXT)
def data_list():
    """Each dataset: files, size, licence and where its files are found."""
    from specdifftree.data.download import DATASETS, where
    from specdifftree.paths import data_cache_dir

    for d in DATASETS.values():
        found = [where(f) for f in d.files]
        roots = sorted({str(p.parents[1]) for p in found if p is not None})
        place = (f"{', '.join(roots)}" + ("" if all(found) else f" ({sum(map(bool, found))}/{len(found)} files)")
                 if roots else "not downloaded")
        unsized = sum(f.size is None for f in d.files)
        known = [f.size for f in d.files if f.size is not None]
        size = " + ".join(([f"{sum(known) / 1e6:.1f} MB"] if known else []) + ([f"{unsized} of unknown size"] if unsized else []))
        unchecked = sum(f.checksum is None for f in d.files)
        click.echo(f"{d.name}: {d.description}")
        click.echo(f"  {len(d.files)} files, {size}; licence: {d.licence}")
        click.echo(f"  found in: {place}" + (f"; {unchecked} file(s) without a known checksum" if unchecked else ""))
    click.echo(f"\ndownloads go to {data_cache_dir()} (SDT_DATA_DIR)")


@data.command("download", context_settings=CONTEXT, epilog="""\b
Examples:
  sdt data download ett
  sdt data download all --dest /data/sdt
Offline, place each file by hand at the path the error names (the URL is in the message).""")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("--dest", type=click.Path(file_okay=False), default=None,
              help="Directory to download into [default: $SDT_DATA_DIR, else $SDT_HOME/data].")
def data_download(names, dest):
    """Download datasets (a name from `sdt data list`, `m4` for every M4 frequency, or `all`), with sha256
    checks; a file already there with the right checksum is kept, a partial download resumes."""
    from pathlib import Path

    from specdifftree.data.download import download, select

    chosen = select(names)
    for d in chosen:
        paths = download(d, Path(dest) if dest else None, log=lambda m: click.echo(m, err=True))
        click.echo(f"{d.name}: {len(paths)} files in {paths[0].parents[1]}")

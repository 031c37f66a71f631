"""`sdt caption`: a series captioned at three levels (statistical, structural, semantic)."""

from __future__ import annotations

import json

import click

from specdifftree.cli.options import CONTEXT


@click.command("caption", context_settings=CONTEXT, epilog="""\b
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

    variants = [resolve_variant(level)] if level else list(VARIANTS)  # a typo fails before the file is read
    series = load_captioned(file, columns, fs, label_column)
    captions = caption_series(series, seed)
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

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
  # a caption written by the default prior for the last 96 points, steered by DTS, beside the reference
  sdt caption ../shared/data/ett/ETTh1.csv --column OT --end 15000 --context-length 96 \
      --prior default --method dts --iterations 20 --samples 4
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
@click.option("--prior", default=None, metavar="SPEC",
              help="Write the caption with this prior (default, hf:DIR, ...) under the caption grammar, beside the "
                   "reference caption, with its fact accuracy.")
@click.option("--method", default="dts", show_default=True, metavar="NAME", help="--prior: the search method.")
@click.option("--reward", "rewards", multiple=True, metavar="SPEC",
              help="--prior: the reward steering the search [default: caption-consistency].")
@click.option("--iterations", type=int, default=None, help="--prior: tree iterations (dts, dts-star, mcts).")
@click.option("--samples", type=int, default=None, help="--prior: captions returned.")
@click.option("--budget", type=int, default=None, help="--prior: cap on forward tokens.")
@click.option("--end", type=int, default=None, help="--prior: index one past the window [default: end of file].")
@click.option("--context-length", type=int, default=None,
              help="--prior: points in the window captioned [default: 512].")
@click.option("--max-chars", type=int, default=None, help="--prior: most characters of the caption [240].")
def caption_cmd(file, columns, level, fs, label_column, seed, as_json, prior, method, rewards, iterations, samples,
                budget, end, context_length, max_chars):
    """Caption a series at three levels: statistical, structural and semantic (SensorLM style)."""
    from specdifftree.data.captions import LEVELS, VARIANTS, caption_series, load_captioned, resolve_variant

    variants = [resolve_variant(level)] if level else list(VARIANTS)  # a typo fails before the file is read
    if prior is not None:
        from specdifftree.cli.caption_prior import write_caption

        return write_caption(file, columns, level and variants[0], fs, label_column, seed, as_json, prior, method,
                             rewards, dict(iterations=iterations, samples=samples, budget=budget), end, context_length,
                             max_chars)
    given = {"--method": method != "dts", "--reward": rewards, "--iterations": iterations, "--samples": samples,
             "--budget": budget, "--end": end, "--context-length": context_length, "--max-chars": max_chars}
    if any(v for v in given.values()):
        from specdifftree.errors import SDTError

        raise SDTError(f"{next(k for k, v in given.items() if v)} needs --prior SPEC (a model writes the caption)")
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

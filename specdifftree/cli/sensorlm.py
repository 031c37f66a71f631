"""`sdt sensorlm`: train the two-tower sensor-language model, classify windows zero-shot, retrieve texts."""

from __future__ import annotations

import json

import click

from specdifftree.cli.options import CONTEXT
from specdifftree.config import preset_names


@click.group("sensorlm", context_settings=CONTEXT, epilog="""\b
Examples:
  sdt sensorlm train --preset smoke --out runs/slm --no-wandb
  sdt sensorlm classify --model runs/slm --series ../shared/data/har_chest_acc/6.csv \\
      --labels sitting,standing,walking,stairs
  sdt sensorlm retrieve --model runs/slm --series ../shared/data/har_chest_acc/6.csv --texts texts.txt
  sdt search --task qa ... --reward sensorlm:runs/slm --method dts     # as a reward""")
def sensorlm():
    """A sensor-language model (SensorLM's two towers, SigLIP loss) trained on the hierarchical captions."""


@sensorlm.command("train", context_settings=CONTEXT, epilog="""\b
Examples:
  sdt sensorlm train --preset smoke --out runs/slm            # minutes on 2 CPU cores
  sdt sensorlm train --preset smoke --out runs/slm --resume   # continue after a crash or kill -9
  sdt sensorlm train --preset default --out runs/slm-default --no-wandb
Writes OUT/model.safetensors, tokenizer.json, sensorlm.json, metrics.csv, loss.png, recall.png.""")
@click.option("--preset", default="smoke", show_default=True, type=click.Choice(preset_names("sensorlm")),
              help="configs/sensorlm/NAME.yaml.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last completed epoch.")
@click.option("--seed", type=int, default=None, help="Overrides the preset's seed.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Real datasets folder [default: ../shared/data when it exists].")
@click.option("--wandb/--no-wandb", default=True, show_default=True,
              help="Mirror metrics to W&B (offline unless logged in); the local record is always written.")
def train_cmd(preset, out_dir, resume, seed, data_dir, wandb):
    """Train the sensor and text towers on (window, caption) pairs."""
    from pathlib import Path

    from specdifftree.report import table
    from specdifftree.sensorlm.train import SensorLMTrainConfig, check_out, train_sensorlm

    overrides = {k: v for k, v in (("seed", seed), ("data_dir", data_dir)) if v is not None}
    cfg = SensorLMTrainConfig.from_name(preset, overrides)
    check_out(Path(out_dir), resume)
    record = train_sensorlm(cfg, Path(out_dir), resume=resume, wandb=wandb)
    cols = ["epoch", "train_loss", "val_loss", "val_r1_s2t", "val_r5_s2t", "val_r1_t2s", "val_r5_t2s", "seconds"]
    click.echo(table(record["metrics"], cols))
    click.echo(f"{record['params']:,} parameters; model in {out_dir}")


@sensorlm.command("classify", context_settings=CONTEXT, epilog="""\b
Examples:
  # a held-out participant, four activities; accuracy against the file's labels
  sdt sensorlm classify --model runs/slm --series ../shared/data/har_chest_acc/6.csv \\
      --labels sitting,standing,walking,stairs
  sdt sensorlm classify --model runs/slm --series ../shared/data/har_chest_acc/6.csv \\
      --labels "working at computer,standing,walking" --template "The person is {label}." --json
The file is cut into windows of the model's length; each gets a softmax over t * cos(window, prompt).""")
@click.option("--model", "model_dir", required=True, type=click.Path(), help="A trained sensorlm directory.")
@click.option("--series", required=True, type=click.Path(), help="CSV file (chest-accelerometer files: x, y, z).")
@click.option("--column", "columns", multiple=True, help="Channel to read (repeatable) [default: all numeric].")
@click.option("--labels", required=True, help="Comma-separated class names.")
@click.option("--template", default=None, help='Prompt per class [default: "The recording shows {label}."].')
@click.option("--json", "as_json", is_flag=True, help="Print windows, labels and accuracy as JSON.")
def classify_cmd(model_dir, series, columns, labels, template, as_json):
    """Zero-shot classification of every window of a series by prompt similarity."""
    from specdifftree.report import table
    from specdifftree.sensorlm.apply import classify

    out = classify(model_dir, series, labels, template, columns)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    rows = [{"start": r["start"], "end": r["end"], "predicted": r["predicted"], "p": r["p"],
             "truth": r["truth"] or "-", "ok": "-" if r["truth"] is None else "yes" if r["truth"] == r["predicted"] else "no"}
            for r in out["windows"]]
    click.echo(table(rows))
    acc = out["accuracy"]
    click.echo(f"accuracy: {acc:.3f} over {out['n_scored']} labelled windows (chance 1/{len(out['labels'])} = "
               f"{1 / len(out['labels']):.3f})" if acc is not None else "accuracy: - (no window with a label among --labels)")


@sensorlm.command("retrieve", context_settings=CONTEXT, epilog="""\b
Examples:
  printf 'The recording shows walking.\\nThe recording shows sitting.\\n' > texts.txt
  sdt sensorlm retrieve --model runs/slm --series ../shared/data/har_chest_acc/6.csv --texts texts.txt
  sdt sensorlm retrieve --model runs/slm --series ../shared/data/ett/ETTh1.csv --column OT --texts t.txt --json
Scores are SigLIP logits t * cos + b (log-odds that the text describes the window).""")
@click.option("--model", "model_dir", required=True, type=click.Path(), help="A trained sensorlm directory.")
@click.option("--series", required=True, type=click.Path(), help="CSV file, cut into windows of the model's length.")
@click.option("--column", "columns", multiple=True, help="Channel to read (repeatable) [default: all numeric].")
@click.option("--texts", required=True, type=click.Path(), help="Text file, one text a line.")
@click.option("--top", "k", type=int, default=3, show_default=True, help="How many matches to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the matches as JSON.")
def retrieve_cmd(model_dir, series, columns, texts, k, as_json):
    """Top-k texts per window and top-k windows per text."""
    from specdifftree.report import table
    from specdifftree.sensorlm.apply import read_texts, retrieve

    out = retrieve(model_dir, series, read_texts(texts), columns, k)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    short = [t if len(t) <= 60 else t[:57] + "..." for t in out["texts"]]
    click.echo(table([{"window start": w["start"], "rank": r + 1, "logit": m["logit"], "text": short[m["text"]]}
                      for w in out["per_window"] for r, m in enumerate(w["texts"])]))
    click.echo()
    click.echo(table([{"text": short[t["text"]], "rank": r + 1, "window start": m["start"], "logit": m["logit"]}
                      for t in out["per_text"] for r, m in enumerate(t["windows"])]))


@sensorlm.command("evaluate", context_settings=CONTEXT, epilog="""\b
Examples:
  sdt sensorlm evaluate --model runs/slm                 # the held-out participant and test windows
  sdt sensorlm evaluate --model runs/slm --json > slm_eval.json
Zero-shot accuracy / macro-F1 on the test participant's windows (6 activities; 4 one-word classes)
against chance and a linear probe on the same embeddings; recall@1/@5 on the test split's pairs.""")
@click.option("--model", "model_dir", required=True, type=click.Path(), help="A trained sensorlm directory.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Real datasets folder [default: ../shared/data when it exists].")
@click.option("--figure", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG: held-out windows x class prompts, their SigLIP logits.")
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
def evaluate_cmd(model_dir, data_dir, figure, as_json):
    """Held-out zero-shot classification, linear probe and retrieval numbers."""
    from pathlib import Path

    from specdifftree.report import table
    from specdifftree.sensorlm.checkpoint import check_model_dir
    from specdifftree.sensorlm.train import SensorLMTrainConfig, data_root

    check_model_dir(model_dir)
    root = data_root(SensorLMTrainConfig(data_dir=data_dir))

    from specdifftree.sensorlm.measure import measure

    out = measure(model_dir, Path(root))
    if figure:
        from specdifftree.sensorlm.measure import plot_similarity

        plot_similarity(model_dir, Path(root), Path(figure))
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    cols = ["classes", "template", "n_test", "chance_uniform", "chance_majority", "zero_shot_accuracy",
            "zero_shot_macro_f1", "probe_accuracy", "probe_macro_f1"]
    click.echo(table([{**r, "classes": len(r["classes"])} for r in out["classification"]], cols))
    click.echo()
    r = out["retrieval"]
    click.echo(table([{"pairs": r["n"], **{k: r[k] for k in ("r1_s2t", "r5_s2t", "r1_t2s", "r5_t2s")}}]))
    click.echo()
    click.echo(table([{"variant": v, **x} for v, x in r["by_variant"].items()]))

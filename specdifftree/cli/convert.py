"""Conversion commands: `sdt export-gguf` (a transformers Llama directory -> GGUF) and `sdt convert
opentslm` (an upstream OpenTSLM checkpoint, SP or Flamingo -> our pickle-free checkpoint)."""

from __future__ import annotations

import click

from specdifftree.cli.options import CONTEXT


@click.command("export-gguf", context_settings=CONTEXT, epilog="""\b
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


@click.group(context_settings=CONTEXT)
def convert():
    """Convert checkpoints of other tools into SpecDiffTree's pickle-free format."""


@convert.command("opentslm", context_settings=CONTEXT, epilog="""\b
Examples:
  huggingface-cli download OpenTSLM/llama-3.2-1b-m4-sp model_checkpoint.pt --local-dir ckpt/m4-sp
  huggingface-cli download meta-llama/Llama-3.2-1B --local-dir llm/Llama-3.2-1B
  sdt convert opentslm ckpt/m4-sp --backbone hf:llm/Llama-3.2-1B --out priors/m4-sp
  sdt search --prior priors/m4-sp --series ETTh1.csv --column OT --horizon 24 --reward spectral
The pickle is read once, safely (tensors, plain containers and peft's LoraConfig as data only).
A -flamingo checkpoint converts the same way (its LLM is in the file; --backbone gives the
architecture and the tokenizer).""")
@click.argument("ckpt", type=click.Path(exists=True))
@click.option("--backbone", default=None, metavar="hf:LLM_DIR",
              help="The base LLM [default: from the name, e.g. llama-3.2-1b -> hf:meta-llama/Llama-3.2-1B].")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Checkpoint directory to write.")
def convert_opentslm(ckpt, backbone, out_dir):
    """An OpenTSLM model_checkpoint.pt -> weights.safetensors + config.json (SP: encoder, projector, LoRA;
    Flamingo: encoder, perceiver, cross-attention and the LLM, each tensor once)."""
    from specdifftree.api import convert_opentslm

    click.echo(f"wrote {convert_opentslm(ckpt, out_dir, backbone)}")

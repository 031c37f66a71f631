"""Training commands: `sdt pretrain-backbone` (the embedded default backbone), `sdt train-prior` (the
prior's trained parts, stage by stage) and `sdt prior install|uninstall` (what `--prior default` means)."""

from __future__ import annotations

import click

from specdifftree.cli.options import CONTEXT, load_yaml_defaults, placement, placement_options, presets


@click.command("pretrain-backbone", context_settings=CONTEXT, epilog="""\b
Examples:
  sdt pretrain-backbone --out runs/backbone            # the default preset (minutes on 2 cores)
  sdt pretrain-backbone --out /tmp/bb --preset tiny    # seconds, for tests
  sdt pretrain-backbone --out runs/deep8 --preset deep8 --device cuda   # a larger recipe on a GPU
The directory loads with AutoModelForCausalLM / AutoTokenizer.from_pretrained(DIR).""")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--preset", type=click.Choice(presets("backbone")), default="default", show_default=True,
              help="configs/backbone/NAME.yaml.")
@click.option("--seed", type=int, default=None, help="Override the preset's seed.")
@click.option("--device", default="cpu", show_default=True, metavar="cpu|cuda[:N]|mps|auto",
              help="Where the training steps run, in float32. The committed backbones are CPU builds: "
                   "another device trains on the same batches but gives other weights (float reductions "
                   "differ), so the recorded prefix hashes hold on the CPU only.")
@click.option("--checkpoint-every", type=int, default=50, show_default=True,
              help="Save the build's state to OUT.ckpt every N steps (0: never); a rerun of the same "
                   "command goes on from it, with the same weights as an uninterrupted build.")
def pretrain_backbone_cmd(out_dir, preset, seed, device, checkpoint_every):
    """Build the embedded default backbone (small Llama, digit-level tokenizer) as a transformers directory."""
    from specdifftree.train.backbone import pretrain_backbone

    path = pretrain_backbone(out_dir, preset=preset, seed=seed, progress=True, device=device,
                             checkpoint_every=checkpoint_every)
    click.echo(f"wrote {path}")


@click.command("train-prior", context_settings=CONTEXT, epilog="""\b
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
@click.option("--config", type=click.Path(dir_okay=False), callback=load_yaml_defaults, is_eager=True,
              expose_value=False, help="YAML file of option defaults (command line wins).")
@click.option("--stage", default="all", show_default=True, help="all, or one stage name.")
@click.option("--preset", type=click.Choice(presets("train")), default="default", show_default=True,
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
    from specdifftree.api import train_prior
    from specdifftree.report import table

    summary = train_prior(stage, preset, backbone, out_dir, variant=variant, lora=lora, resume=resume, seed=seed,
                          wandb=wandb, data_dir=data_dir, upstream=upstream,
                          placement=placement(device, dtype, n_gpu_layers))
    if not summary:  # a torchrun rank other than 0: rank 0 reports (and installs)
        return
    keys = ("stage", "test_nll_prior", "test_nll_backbone", "test_accuracy", "test_accuracy_backbone",
            "chance_uniform", "chance_majority", "best_epoch", "wall_s")
    click.echo(table([{k: s.get(k, "") for k in keys} for s in summary.values()]))
    click.echo(f"wrote {out_dir}/summary.json")
    if install_default:
        install(out_dir)


def install(source) -> None:
    """Install a prior checkpoint or train-prior run as `--prior default`, and say so."""
    from specdifftree.prior.checkpoint import install_prior

    target = install_prior(source)
    click.echo(f"installed {source} at {target}: `--prior default` now means this trained prior "
               "(undo with `sdt prior uninstall`)")


@click.group(context_settings=CONTEXT, epilog="""\b
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
    install(source)


@prior.command("uninstall", context_settings=CONTEXT)
def prior_uninstall():
    """Remove the installed prior: `--prior default` is the embedded backbone with fresh parts again."""
    from specdifftree.prior.checkpoint import uninstall_prior

    where = uninstall_prior()
    click.echo(f"removed {where}" if where else "no prior was installed")

"""The curriculum trainer's configuration: one dataclass; named presets are YAML files in
configs/train/ (`TrainConfig.from_name`):

    test      seconds: a few examples per split, a one-layer toy encoder (unit tests)
    smoke     all six stages in a few minutes on 2 CPU cores (README main command)
    default   the README's real results (tens of minutes), OpenTSLM-sized encoder
    full      more data and epochs

The same config trains every stage (each stage restarts the optimizer and its warm-up).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from specdifftree.errors import SDTError
from specdifftree.prior.encoder import EncoderConfig


@dataclass
class TrainConfig:
    preset: str = "default"
    n_train: int = 1024  # examples per split, per stage
    n_val: int = 128
    n_test: int = 128
    epochs: int = 20  # at most; early stopping usually ends a stage sooner
    patience: int = 5  # epochs without a better validation loss before stopping
    batch_size: int = 32
    lr: float = 1e-3  # AdamW, encoder and head
    weight_decay: float = 0.01
    warmup_frac: float = 0.1  # linear warm-up over this share of a stage's steps, then linear decay
    grad_clip: float = 1.0
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    horizon: int = 24  # stage6_forecast: values to forecast
    context_length: int = 96  # stage6_forecast: history points
    backbone_batch: int = 64  # examples advanced together through the frozen backbone
    max_new_slack: int = 16  # generation cap: longest gold answer of the split + this many tokens
    threads: int = 2  # torch threads (fixed: results depend on the reduction order)
    n_show: int = 12  # sample predictions shown in each stage's index.html
    variant: str = "bias"  # "bias": encoder + logit-bias head; "sp": encoder + soft-prompt projector (for_variant)
    lr_projector: float = 1e-4  # sp: the projector's learning rate (cfg.lr is the encoder's)
    lr_lora: float = 1e-4  # sp --lora: the adapters' learning rate
    lora: bool = False  # sp: LoRA adapters on the LLM from stage 3 on
    stage_epochs: dict = field(default_factory=dict)  # per-stage cap on epochs (else `epochs`)

    @classmethod
    def from_name(cls, name: str, overrides: Optional[dict] = None) -> "TrainConfig":
        """configs/train/NAME.yaml over the defaults, then `overrides` (e.g. from the command line)."""
        from specdifftree.config import build, load_preset

        return build(cls, load_preset("train", name), overrides, {"preset": name}, where=f"train preset '{name}'")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def for_variant(self, variant: str, lora: bool = False) -> "TrainConfig":
        """This preset for a variant. "sp" takes OpenTSLM's curriculum hyperparameters (AdamW: encoder
        2e-4, projector 1e-4, weight decay 0.01; warm-up 3%; clip 1.0; encoder in OpenTSLM's layout)
        and, on the default and full presets, its batch size 4, patience 5 and epochs per stage."""
        if variant not in ("bias", "sp"):
            raise SDTError(f"unknown train-prior variant '{variant}' (choose bias or sp)")
        if lora and variant != "sp":
            raise SDTError("--lora trains adapters of the soft-prompt variant: add --variant sp")
        if variant == "bias":
            return dataclasses.replace(self)
        enc = dataclasses.replace(self.encoder, norm_first=False, final_norm=False)
        cfg = dataclasses.replace(self, variant="sp", lora=lora, lr=2e-4, lr_projector=1e-4, weight_decay=0.01,
                                  warmup_frac=0.03, grad_clip=1.0, encoder=enc)
        if self.preset in ("default", "full"):
            cfg = dataclasses.replace(cfg, batch_size=4, patience=5, stage_epochs=dict(UPSTREAM_EPOCHS),
                                      encoder=EncoderConfig.upstream())
        return cfg

    def epochs_for(self, stage: str) -> int:
        return int(self.stage_epochs.get(stage, self.epochs))


# OpenTSLM's epochs per curriculum stage (REFERENCES.md); stage 6 (ours) as stage 2, its nearest task
UPSTREAM_EPOCHS = {"stage1_mcq": 30, "stage2_captioning": 20, "stage3_cot": 30, "stage4_sleep_cot": 60,
                   "stage5_ecg_cot": 60, "stage6_forecast": 20}

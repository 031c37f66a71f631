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

    @classmethod
    def from_name(cls, name: str, overrides: Optional[dict] = None) -> "TrainConfig":
        """configs/train/NAME.yaml over the defaults, then `overrides` (e.g. from the command line)."""
        from specdifftree.config import build, load_preset

        return build(cls, load_preset("train", name), overrides, {"preset": name}, where=f"train preset '{name}'")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


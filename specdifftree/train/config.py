"""The curriculum trainer's configuration: one dataclass; named presets are YAML files in
configs/train/ (`TrainConfig.from_name`):

    test      seconds: a few examples per split, a one-layer toy encoder (unit tests)
    smoke     all six stages in a few minutes on 2 CPU cores (README main command)
    default   the README's real results (tens of minutes), OpenTSLM-sized encoder
    full      more data and epochs

The same config trains every stage (each stage restarts the optimizer and its warm-up).

`BackbonePreset` is the embedded default backbone's architecture and pretraining recipe
(`sdt pretrain-backbone --preset NAME`, `train/backbone.py`); its presets are configs/backbone/*.yaml.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from specdifftree.data.corpus import CorpusMix
from specdifftree.errors import SDTError
from specdifftree.prior.encoder import EncoderConfig
from specdifftree.prior.tokenizer import EOS_ID, PAD_ID, VOCAB_SIZE


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


@dataclass
class BackbonePreset:
    """Architecture (a Llama) and pretraining recipe of the embedded backbone."""

    name: str = "default"
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    head_dim: int = 32
    intermediate_size: int = 384
    max_position_embeddings: int = 2048
    steps: int = 1200  # about 7M training tokens
    stop: int = 0  # train only the first `stop` steps of the `steps`-step schedule (0: all of them)
    batch_size: int = 4  # rows per step
    seq_len: int = 1536  # tokens per row; every document fits in one row
    lr: float = 2e-3
    warmup: int = 60  # linear warm-up steps, then cosine decay to lr * min_lr_ratio
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 1  # torch threads while training (fixed: reduction order depends on it; one
                      # thread keeps its speed on a busy machine, where two slowed a build 3.5x)
    minutes: float = 25.0  # rough build time on 2 cores (~5k tokens/s), for the first-use message
    # the corpus (`CorpusMix`, whose defaults are the corpus of default-v5-base)
    captions: str = CorpusMix.captions  # caption documents: "sentence" or "hierarchical"
    real_share: float = CorpusMix.real_share  # share of series windows taken from real series (when present)
    history: tuple = CorpusMix.history  # history lengths of a document, log-uniform in [lo, hi]
    horizon: tuple = CorpusMix.horizon  # forecast lengths of a forecast document, uniform in [lo, hi]
    periodic_share: float = CorpusMix.periodic_share  # share of synthetic windows that are repeated shapes
    ett_share: float = CorpusMix.ett_share  # share of real windows from the ETT columns (0: series drawn uniformly)
    corpus: str = "series"  # "series": data/corpus.py (the corpus fields above); "text": data/text_corpus.py
                            # (stage-like questions, captions of levels 1-3 and rationales, plus series text)
    init: str = ""  # start from these weights instead of random ones: a backbone directory name under
                    # specdifftree/assets/backbones, or else a backbone preset (built first, cached);
                    # their sha256 goes in the record; more layers than init's come from `expand_layers`

    def __post_init__(self) -> None:
        self.history, self.horizon = tuple(self.history), tuple(self.horizon)
        if not 0 <= self.stop <= self.steps:
            raise SDTError(f"backbone preset '{self.name}': stop must be between 0 and steps ({self.steps})")
        if self.corpus not in ("series", "text"):
            raise SDTError(f"backbone preset '{self.name}': corpus must be series or text, not '{self.corpus}'")
        for key, (lo, hi) in (("history", self.history), ("horizon", self.horizon)):
            if not 1 <= lo <= hi:
                raise SDTError(f"backbone preset '{self.name}': {key} must be [lo, hi] with 1 <= lo <= hi")

    @classmethod
    def from_name(cls, name: str) -> "BackbonePreset":
        """configs/backbone/NAME.yaml over the defaults."""
        from specdifftree.config import build, load_preset

        return build(cls, load_preset("backbone", name), {"name": name}, where=f"backbone preset '{name}'")

    def corpus_mix(self) -> CorpusMix:
        """The corpus fields as the corpus generator takes them."""
        return CorpusMix(self.captions, self.real_share, self.history, self.horizon, self.periodic_share,
                         self.ett_share)

    def llama_config(self):
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=VOCAB_SIZE, hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads, num_key_value_heads=self.num_heads, head_dim=self.head_dim,
            intermediate_size=self.intermediate_size, max_position_embeddings=self.max_position_embeddings,
            tie_word_embeddings=False, bos_token_id=EOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
        )

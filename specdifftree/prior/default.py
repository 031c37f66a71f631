"""The embedded default backbone: a small Llama trained on text made from series.

No model hub is reachable on a fresh machine, so the package ships its own causal LM, built by
`sdt pretrain-backbone --preset default` from this module and committed under
specdifftree/assets/backbones/ (`packaged_backbone`): first use is instant and every machine
searches the same weights. Without the packaged copy (other presets, or an install that left it
out) `ensure_default_backbone` builds it on first use and caches it under `sdt_home()`. Real users
pass a hub id, a local transformers directory or a GGUF file instead.

    path = ensure_default_backbone()        # specdifftree/assets/backbones/default-v7
    model, tok = load_hf_dir(path)          # plain transformers objects, eval mode, float32

Tokenizer: `specdifftree.prior.tokenizer` (byte level: id == byte value for 0..255, EOS 256,
PAD 257), so every digit, comma and minus sign is one token.

Corpus (`iter_documents`): an endless, seeded stream of ASCII documents, each ending in EOS.
    forecast (80%): forecast_prompt(history, H) + forecast_answer(future) over windows of
                    synthetic series (sines, trends, AR(1), regime shifts, spikes, ECG-like,
                    accelerometer-like) and, when shared/data is present, of real series:
                    ETTh1/ETTh2 (7 columns each) and M4 Hourly train rows. Only the first 60%
                    of each ETT file and of each M4 train row is read, so evaluation windows
                    taken from the last 40% (and the M4 test file) are never seen in training.
    caption  (10%): the series description line, half the time its values, and a caption
                    sentence made from statistics (trend, dominant FFT period, min/max); with
                    the "captions" preset instead a hierarchical caption (data/captions.py) in
                    a variant drawn from statistics / structure / both, asked for as stage 2 asks.
    qa       (10%): description + values + "Question: ... Answer: ..." (max, min, first, last,
                    length, trend, period, argmax).
Every document fits in the preset's sequence length (long histories are shortened). A preset's
corpus fields (`CorpusMix`: history and horizon ranges, the share of real windows, the share of
synthetic windows that are repeated shapes, `periodic_series`) change the stream; at their
defaults it is the stream default-v5-base was trained on: default-v3's mix, with forecasts and
values written by the anchored codec (`data.prompts.forecast_codec`) and each answer continuing
its history's list (`data.prompts.forecast_prompt`).

A preset may start from a committed backbone's weights (`init: default-v5-base`) instead of random
ones: training on, reproducibly, since the committed weights are fixed and their sha256 recorded.
A preset with more layers than its init starts from a deepened copy (`expand_layers`, block
expansion): the same function, with room to learn more.
The `default` preset (configs/backbone/default.yaml) does: default-v7 is default-v6 (the
`default-v6` preset) deepened from 4 to 8 layers and trained 1,500 more steps on fresh windows;
default-v6 is default-v5 (the `default-v5` preset) trained 1,500 more steps at a lower learning
rate; default-v5 is default-v5-base (the `scratch4` preset, the `BackbonePreset` defaults) trained
1,500 more steps on an M4-weighted mix. All four ship, so each rebuilds from the one before.

Training (`pretrain_backbone`): AdamW, linear warm-up then cosine decay to 10%, gradient clip
1.0, rows packed greedily with whole documents (each row starts with a document at position 0),
right-padded with PAD, loss on non-pad tokens. Deterministic: the corpus comes from the seed, the
weights from torch.manual_seed(seed), and torch runs with a fixed thread count
(`BackbonePreset.threads`) because the thread count changes the order of float reductions.
Two builds with the same seed on the same machine give bit-identical safetensors; a different CPU
or torch build may differ in the last bits. The record of a build (sdt_backbone.json) holds hashes
of its first PREFIX_STEPS steps (`prefix_record`), which tests/test_default_backbone.py rebuilds.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Union

import numpy as np

from specdifftree.data.codec import NumberCodec
from specdifftree.data.features import caption, dominant_period, trend_word
from specdifftree.data.prompts import describe, forecast_answer, forecast_codec, forecast_prompt
from specdifftree.paths import default_data_dir as data_dir
from specdifftree.paths import sdt_home
from specdifftree.data.synthetic import periodic_series, synthetic_series
from specdifftree.data.splits import ETT_FRACTIONS, m4_is_eval
from specdifftree.errors import SDTError
from specdifftree.files import replace_dir
from specdifftree.prior.tokenizer import EOS_TOKEN, PAD_TOKEN, SPECIAL_TOKENS, vocab

if TYPE_CHECKING:
    import torch

EOS_ID = vocab()[EOS_TOKEN]  # 256
PAD_ID = vocab()[PAD_TOKEN]  # 257
VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)  # 258
DEFAULT_BACKBONE = "default-v7"  # bump the suffix when the preset or corpus changes
# the default backbone as `sdt pretrain-backbone --preset default` built it, committed so that first
# use is instant and every machine searches the same weights (its sdt_backbone.json: how it was built)
PACKAGED = Path(__file__).resolve().parent.parent / "assets" / "backbones"
ETT_TRAIN_FRACTION = ETT_FRACTIONS["prior"][1]  # share of each ETT file / M4 train row the corpus may read
MIX = {"forecast": 0.8, "caption": 0.1, "qa": 0.1}
_AUTO = "auto"


# --------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class CorpusMix:
    """What a corpus document is drawn from (the corpus fields of `BackbonePreset`)."""

    captions: str = "sentence"  # "sentence" (one templated sentence) or "hierarchical"
    real_share: float = 0.6  # see `_window`
    history: tuple = (24, 192)  # history lengths, log-uniform in [lo, hi]
    horizon: tuple = (8, 96)  # forecast lengths, uniform in [lo, hi]
    periodic_share: float = 0.0  # see `_window`
    ett_share: float = 0.0  # see `_window`

    @classmethod
    def of(cls, p: "BackbonePreset") -> "CorpusMix":
        return cls(p.captions, p.real_share, p.history, p.horizon, p.periodic_share, p.ett_share)


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
    init: str = ""  # start from these weights instead of random ones: a backbone directory name under
                    # specdifftree/assets/backbones, or else a backbone preset (built first, cached);
                    # their sha256 goes in the record; more layers than init's come from `expand_layers`

    def __post_init__(self) -> None:
        self.history, self.horizon = tuple(self.history), tuple(self.horizon)
        for key, (lo, hi) in (("history", self.history), ("horizon", self.horizon)):
            if not 1 <= lo <= hi:
                raise SDTError(f"backbone preset '{self.name}': {key} must be [lo, hi] with 1 <= lo <= hi")

    @classmethod
    def from_name(cls, name: str) -> "BackbonePreset":
        """configs/backbone/NAME.yaml over the defaults."""
        from specdifftree.config import build, load_preset

        return build(cls, load_preset("backbone", name), {"name": name}, where=f"backbone preset '{name}'")

    def llama_config(self):
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=VOCAB_SIZE, hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads, num_key_value_heads=self.num_heads, head_dim=self.head_dim,
            intermediate_size=self.intermediate_size, max_position_embeddings=self.max_position_embeddings,
            tie_word_embeddings=False, bos_token_id=EOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
        )



# --------------------------------------------------------------------------- series


@lru_cache(maxsize=4)
def real_series(root: Optional[Path]) -> tuple[tuple[str, np.ndarray], ...]:
    """(name, values) of the real series the corpus may read: the first 60% of each ETTh1/ETTh2
    column and of each M4 Hourly train row not held out for evaluation (`data/splits.py`).
    Missing files are skipped; () when root is None."""
    from specdifftree.data.sources import read_ett, read_m4

    out: list[tuple[str, np.ndarray]] = []
    if root is None:
        return ()
    for name in ("ETTh1", "ETTh2"):
        path = root / "ett" / f"{name}.csv"
        if path.is_file():
            for col, values in read_ett(path).items():
                out.append((f"{name}:{col}", values[: int(len(values) * ETT_TRAIN_FRACTION)]))
    path = root / "m4" / "Hourly-train.csv"
    if path.is_file():
        for i, s in enumerate(read_m4(path)):
            if not m4_is_eval(i):
                out.append((f"M4:{s.id}", s.values[: int(len(s.values) * ETT_TRAIN_FRACTION)]))
    return tuple((n, v) for n, v in out if len(v) >= 32 and np.all(np.isfinite(v)))


# --------------------------------------------------------------------------- documents


def _values_line(x: np.ndarray, codec: NumberCodec) -> str:
    return f"{describe(x)} Values: {codec.encode(x)}\n"


def _question(rng, x: np.ndarray, codec: NumberCodec) -> tuple[str, str]:
    kind = rng.integers(8)
    if kind == 0:
        return "what is the maximum value?", codec.encode(x[[np.argmax(x)]])
    if kind == 1:
        return "what is the minimum value?", codec.encode(x[[np.argmin(x)]])
    if kind == 2:
        return "what is the first value?", codec.encode(x[:1])
    if kind == 3:
        return "what is the last value?", codec.encode(x[-1:])
    if kind == 4:
        return "how many values are there?", str(len(x))
    if kind == 5:
        return "is the trend up, down or flat?", trend_word(x)
    if kind == 6:
        period = dominant_period(x)
        return "what is the dominant period?", f"about {period:.0f} points" if period else "none"
    return "at which position (counting from 1) is the maximum?", str(int(np.argmax(x)) + 1)


def _window(rng, real, n: int, real_share: float = 0.6, periodic_share: float = 0.0,
            ett_share: float = 0.0) -> np.ndarray:
    """n points of a series: a random real window when real series are given (a `real_share` of
    the time), else synthetic (`periodic_series` a `periodic_share` of those times). A real window
    comes from a series drawn uniformly, or, with `ett_share` > 0, from the ETT columns that share
    of the time and from the other series otherwise (uniformly there: M4 holds ~400 rows, ETT 14)."""
    if real and rng.random() < real_share:
        pool = real
        if ett_share > 0:  # no draw at 0: older corpora unchanged
            ett = rng.random() < ett_share
            pool = [s for s in real if s[0].startswith("ETT") == ett] or real
        for _ in range(8):
            _, values = pool[rng.integers(len(pool))]
            stride = 1 if rng.random() < 0.8 else int(rng.integers(2, 5))
            if len(values) >= n * stride:
                start = rng.integers(len(values) - n * stride + 1)
                return values[start : start + n * stride : stride].copy()
    if periodic_share > 0 and rng.random() < periodic_share:  # no draw at 0: older corpora unchanged
        return periodic_series(rng, n)
    return synthetic_series(rng, n)


def make_document(rng: np.random.Generator, real=(), max_tokens: int = 1536, mix: CorpusMix = CorpusMix()) -> str:
    """One document (ASCII text ending in EOS) of at most max_tokens tokens (bytes + EOS)."""
    kind = rng.choice(list(MIX), p=list(MIX.values()))
    length = int(np.exp(rng.uniform(np.log(mix.history[0]), np.log(mix.history[1] + 1))))
    horizon = int(rng.integers(mix.horizon[0], mix.horizon[1] + 1)) if kind == "forecast" else 0
    captions = mix.captions
    for _ in range(12):
        x = _window(rng, real, length + horizon, mix.real_share, mix.periodic_share, mix.ett_share)
        history, future = x[:length], x[length:]
        codec = forecast_codec(history)
        if kind == "forecast":
            text = forecast_prompt(history, horizon, codec) + forecast_answer(future, codec)
        elif kind == "caption":
            head = _values_line(history, codec) if rng.random() < 0.5 else describe(history) + "\n"
            text = f"{head}{_hierarchical_caption(rng, history) if captions == 'hierarchical' else 'Caption: ' + caption(history)}"
        else:
            q, a = _question(rng, history, codec)
            text = f"{_values_line(history, codec)}Question: {q} Answer: {a}"
        if len(text.encode()) + 1 <= max_tokens:
            return text + EOS_TOKEN
        length, horizon = max(24, int(length * 0.7)), max(8, int(horizon * 0.8))
    raise AssertionError("a document did not fit in max_tokens")  # unreachable for max_tokens >= 512


def _hierarchical_caption(rng: np.random.Generator, x: np.ndarray) -> str:
    """A data/captions.py caption of x in a variant drawn uniformly from those of a series without
    labels, asked for as stage 2 asks (`ASK`): "<ask>\nCaption: <caption>"."""
    from specdifftree.data.captions import ASK, UNLABELLED_VARIANTS, Captioned, caption_series

    variant = UNLABELLED_VARIANTS[int(rng.integers(len(UNLABELLED_VARIANTS)))]
    return f"{ASK[variant]}\nCaption: {caption_series(Captioned.build({'the series': x}), seed=rng).text(variant)}"


def iter_documents(seed: int = 0, data: Union[str, Path, None] = _AUTO, max_tokens: int = 1536,
                   mix: CorpusMix = CorpusMix()) -> Iterator[str]:
    """The endless, deterministic corpus stream. data: "auto" (see `data_dir`), a folder, or None
    for synthetic series only."""
    root = data_dir() if data == _AUTO else (Path(data) if data is not None else None)
    real = real_series(root)
    rng = np.random.default_rng([seed, 20251])
    while True:
        yield make_document(rng, real, max_tokens, mix)


def generate_corpus(n_docs: int, seed: int = 0, data: Union[str, Path, None] = _AUTO,
                    max_tokens: int = 1536, mix: CorpusMix = CorpusMix()) -> list[str]:
    """The first n_docs documents of `iter_documents(seed, data, max_tokens, mix)`."""
    return list(islice(iter_documents(seed, data, max_tokens, mix), n_docs))


def encode_document(doc: str) -> list[int]:
    """Token ids of a corpus document: bytes, then EOS (same ids as the HF tokenizer gives)."""
    assert doc.endswith(EOS_TOKEN)
    return list(doc[: -len(EOS_TOKEN)].encode("ascii")) + [EOS_ID]


def _batches(docs: Iterator[str], batch_size: int, seq_len: int) -> Iterator[torch.Tensor]:
    """Rows packed greedily with whole documents, right-padded with PAD.  -> [B, T<=seq_len] int64"""
    import torch

    pending = encode_document(next(docs))
    while True:
        rows = []
        for _ in range(batch_size):
            row: list[int] = []
            while len(row) + len(pending) <= seq_len:
                row += pending
                pending = encode_document(next(docs))
            rows.append(row)
        width = max(map(len, rows))
        yield torch.tensor([r + [PAD_ID] * (width - len(r)) for r in rows], dtype=torch.long)


# --------------------------------------------------------------------------- training


PREFIX_STEPS = 4  # the build's first steps, hashed into its record (`prefix_record`)


def pretrain_backbone(out_dir: Union[str, Path], preset: Union[str, BackbonePreset] = "default",
                      seed: Optional[int] = None, progress: bool = True, device: str = "cpu") -> Path:
    """Train the backbone from scratch and write a transformers directory at out_dir (atomically:
    built in out_dir.tmp-<pid>, then renamed; an existing out_dir is replaced). seed None = the
    preset's seed. Returns out_dir. The directory's sdt_backbone.json records the command, preset,
    seed, corpus, loss curve, versions, CPU, device and `prefix_record` of the first PREFIX_STEPS steps.

    device: where the steps run, in float32 ("cpu", "cuda[:N]", "mps"; `Placement` rules). The
    committed backbones and their prefix hashes are CPU builds: another device trains the same
    recipe on the same batches, but its float reductions differ, so its weights are not the CPU's."""
    import torch

    from specdifftree.machine import cpu_name, version
    from specdifftree.prior.tokenizer import build_hf_tokenizer

    p = BackbonePreset.from_name(preset) if isinstance(preset, str) else preset
    seed = p.seed if seed is None else int(seed)
    out_dir = Path(out_dir)
    start = time.time()
    model, run = _train(p, seed, p.steps, progress, device)
    losses = run["losses"]
    tail = losses[-max(1, len(losses) // 10):]
    every = max(1, len(losses) // 50)
    record = {
        "command": f"sdt pretrain-backbone --preset {p.name} --seed {seed} --out DIR"
                   + (f" --device {device}" if run["device"] != "cpu" else ""),
        "preset": asdict(p), "seed": seed, "steps": p.steps, "train_tokens": run["tokens"],
        "initial_loss": losses[0], "final_loss": float(np.mean(tail)), "uniform_loss": math.log(VOCAB_SIZE),
        "loss_curve": {str(i): round(v, 4) for i, v in enumerate(losses) if i % every == 0 or i == len(losses) - 1},
        "prefix": run["prefix"], "corpus": _corpus_description(p),
        "wall_time_s": None, "torch": torch.__version__, "transformers": version("transformers"), "cpu": cpu_name(),
        "device": run["device"],
    }
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        model.generation_config.eos_token_id = EOS_ID
        model.generation_config.pad_token_id = PAD_ID
        model.generation_config.bos_token_id = EOS_ID
        _save_quietly(model, tmp, progress)
        tok = build_hf_tokenizer()
        tok.model_max_length = p.max_position_embeddings
        tok.save_pretrained(tmp)
        record["wall_time_s"] = round(time.time() - start, 1)
        (tmp / "sdt_backbone.json").write_text(json.dumps(record, indent=2) + "\n")
        replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def prefix_record(preset: Union[str, BackbonePreset] = "default", seed: Optional[int] = None) -> dict:
    """The first PREFIX_STEPS steps of the preset's build (same schedule, stopped early), as the
    build records them: {"steps", "batches_sha256" (the token ids trained on), "weights_sha256"
    (every parameter's float32 bytes, by name), "losses"}. Seconds to compute; a test compares it
    with the committed backbone's record."""
    p = BackbonePreset.from_name(preset) if isinstance(preset, str) else preset
    return _train(p, p.seed if seed is None else int(seed), PREFIX_STEPS, progress=False)[1]["prefix"]


def _train(p: BackbonePreset, seed: int, steps: int, progress: bool, device: str = "cpu"):
    """The first `steps` steps of the preset's training (its schedule runs over p.steps), on `device`.
    -> (model in eval mode, on the CPU; {"losses", "tokens", "prefix", "device"})"""
    import hashlib

    import torch
    from tqdm.auto import tqdm
    from transformers import LlamaForCausalLM

    from specdifftree.prior.backbones.base import Placement

    dev = Placement(device, "float32").torch_device()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(p.threads)
    try:
        torch.manual_seed(seed)  # on the CPU: the initial weights are the same on every device
        model = LlamaForCausalLM(p.llama_config()).to(dev)
        model.train()
        decay = [w for w in model.parameters() if w.dim() >= 2]
        no_decay = [w for w in model.parameters() if w.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": p.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=p.lr, betas=(0.9, 0.95))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, p))
        if p.init:
            _load_init(model, p.init)
        docs = iter_documents(seed, max_tokens=p.seq_len, mix=CorpusMix.of(p))
        batches = _batches(docs, p.batch_size, p.seq_len)
        losses, tokens, seen, prefix = [], 0, hashlib.sha256(), None
        bar = tqdm(range(steps), desc=f"pretraining {p.name} backbone", disable=not progress, file=sys.stderr)
        for step in bar:
            ids = next(batches)
            labels = ids.masked_fill(ids == PAD_ID, -100)
            loss = model(input_ids=ids.to(dev), labels=labels.to(dev)).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            tokens += int((ids != PAD_ID).sum())
            seen.update(ids.numpy().tobytes())
            if step + 1 == min(PREFIX_STEPS, steps):
                prefix = {"steps": step + 1, "batches_sha256": seen.hexdigest(),
                          "weights_sha256": _weights_sha256(model), "losses": list(losses)}
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        bar.close()
        model.eval().to("cpu")
    finally:
        torch.set_num_threads(old_threads)
    return model, {"losses": losses, "tokens": tokens, "prefix": prefix, "device": _device_name(dev)}


def _device_name(dev) -> str:
    """"cpu", or the accelerator with its model name ("cuda:0 (NVIDIA H100 80GB HBM3)")."""
    import torch

    if dev.type != "cuda":
        return dev.type
    index = torch.cuda.current_device() if dev.index is None else dev.index
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def init_weights(name: str) -> Path:
    """The weights file a preset's `init` names: a committed backbone under PACKAGED, or else the
    backbone preset of that name, built on first use into sdt_home() (`ensure_default_backbone`),
    so a chain of presets rebuilds from its first link without committing every link."""
    from specdifftree.config import preset_names

    path = PACKAGED / name / "model.safetensors"
    if path.is_file():
        return path
    if name != "default" and name in preset_names("backbone"):
        return ensure_default_backbone(preset=name) / "model.safetensors"
    raise SDTError(f"backbone preset: init '{name}' names no committed backbone ({path} is missing) "
                   "and no backbone preset")


def _load_init(model, name: str) -> None:
    """Copy the committed backbone `name`'s weights into model (same architecture, strict; a model
    with more layers gets them by `expand_layers`)."""
    from safetensors.torch import load_file

    state = load_file(init_weights(name))
    have, want = _num_layers(state), model.config.num_hidden_layers
    try:
        if want > have:
            state = expand_layers(state, want)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, SDTError) as e:
        raise SDTError(f"backbone preset: init '{name}' has another architecture than the preset: "
                       f"{str(e).splitlines()[0]}") from None


def _num_layers(state: dict) -> int:
    return len({k.split(".")[2] for k in state if k.startswith("model.layers.")})


def expand_layers(state: dict, num_layers: int) -> dict:
    """Deepen a Llama state dict without changing its function (block expansion, LLaMA Pro, Wu et
    al. 2024): the n layers are split into `num_layers - n` equal groups, and after each group goes
    a copy of the group's last layer whose two output projections (self_attn.o_proj, mlp.down_proj)
    are zero, so the new layer adds nothing to the residual stream until training moves them.
    8 -> 12 layers: A B B' C D D' ...; 8 -> 16: A A' B B' ...  state: name -> tensor (not modified)."""
    n = _num_layers(state)
    extra = num_layers - n
    if extra <= 0 or n % extra:
        raise SDTError(f"cannot expand {n} layers to {num_layers}: the new layers must split the old ones "
                       f"into equal groups ({n} must be a multiple of {num_layers} - {n})")
    group = n // extra
    out = {k: w for k, w in state.items() if not k.startswith("model.layers.")}
    blocks = [{k.split(".", 3)[3]: w for k, w in state.items() if k.startswith(f"model.layers.{i}.")}
              for i in range(n)]
    zeroed = ("self_attn.o_proj.weight", "mlp.down_proj.weight")
    deeper = []
    for i, block in enumerate(blocks):
        deeper.append({k: w.clone() for k, w in block.items()})
        if (i + 1) % group == 0:
            deeper.append({k: w.clone().zero_() if k in zeroed else w.clone() for k, w in block.items()})
    for j, block in enumerate(deeper):
        out.update({f"model.layers.{j}.{k}": w for k, w in block.items()})
    return out


def _weights_sha256(model) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, w in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(w.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _save_quietly(model, path: Path, progress: bool) -> None:
    """save_pretrained (safetensors), without transformers' progress bar when progress is off."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(path)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _lr_factor(step: int, p: BackbonePreset) -> float:
    if step < p.warmup:
        return (step + 1) / p.warmup
    frac = (step - p.warmup) / max(1, p.steps - p.warmup)
    return p.min_lr_ratio + (1 - p.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


def _corpus_description(p: BackbonePreset) -> dict:
    import hashlib

    root = data_dir()
    real = real_series(root)
    init = {"init": p.init, "init_sha256": hashlib.sha256(init_weights(p.init).read_bytes()).hexdigest()} if p.init else {}
    return {
        **init,
        "mix": MIX,
        "synthetic": "sines, trends, AR(1), regime shifts, spikes, ECG-like, accelerometer-like"
                     + (f"; {p.periodic_share:.0%} repeated shapes (periodic_series)" if p.periodic_share else ""),
        "lengths": f"history {p.history[0]}-{p.history[1]}, horizon {p.horizon[0]}-{p.horizon[1]} (shortened to fit seq_len)",
        "real_data_dir": str(root) if root else None,
        "real_series": len(real),
        "real_sources": sorted({name.split(":")[0] for name, _ in real}),
        "real_fraction_read": ETT_TRAIN_FRACTION,
        "real_share_of_windows": p.real_share if real else 0.0,
        **({"ett_share_of_real_windows": p.ett_share} if p.ett_share else {}),
    }


# --------------------------------------------------------------------------- cache and loading


def _is_built(path: Path) -> bool:
    files = ("sdt_backbone.json", "config.json", "model.safetensors", "tokenizer.json")
    return all((path / f).is_file() for f in files)


def packaged_backbone() -> Optional[Path]:
    """The default backbone shipped in the package (PACKAGED/DEFAULT_BACKBONE), or None when the
    install left it out."""
    path = PACKAGED / DEFAULT_BACKBONE
    return path if _is_built(path) else None


def ensure_default_backbone(progress: bool = True, preset: str = "default") -> Path:
    """The packaged default backbone when preset is "default" and it is installed; otherwise
    sdt_home()/backbones/<name>, built on first use. A file lock makes concurrent callers wait for
    one build; the directory appears only complete (atomic rename)."""
    if preset == "default" and packaged_backbone() is not None:
        return packaged_backbone()
    root = sdt_home() / "backbones"
    name = DEFAULT_BACKBONE if preset == "default" else f"{preset}-v1"
    target = root / name
    if _is_built(target):
        return target
    p = BackbonePreset.from_name(preset)
    root.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(root / f".{name}.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process to finish building the {preset} backbone in {target} ...",
                  file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _is_built(target):
                return target
            for stale in root.glob(f"{name}.tmp-*"):  # left by a killed build (we hold the lock)
                shutil.rmtree(stale, ignore_errors=True)
            minutes = max(1, round(p.minutes))
            print(f"building the {preset} backbone (first use, about {minutes} minute{'s' * (minutes > 1)}) "
                  f"into {target} ...", file=sys.stderr, flush=True)
            pretrain_backbone(target, p, progress=progress)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def load_hf_dir(path: Union[str, Path]):
    """(model, tokenizer) of a local transformers directory: eval mode, float32, safetensors only
    (pickled weights are never loaded), no network."""
    path = Path(path)
    if not path.is_dir():
        raise SDTError(f"{path} is not a directory; expected a transformers model directory "
                       "(config.json, model.safetensors, tokenizer.json)")
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    if not any((path / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")):
        pickles = [f for f in ("pytorch_model.bin", "pytorch_model.bin.index.json") if (path / f).is_file()]
        missing.append("model.safetensors" + (f" (found {pickles[0]}; pickled weights are not loaded,"
                                              " convert them to safetensors)" if pickles else ""))
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        missing.append("tokenizer.json")
    if missing:
        raise SDTError(f"{path} is not a transformers model directory: missing {', '.join(missing)}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True,
                                                     local_files_only=True)
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:  # noqa: BLE001 (any loader failure is a bad directory for the user)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SDTError(f"cannot load the model in {path}: {first}") from None
    model.eval()
    return model, tok

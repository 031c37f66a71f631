"""The default backbone's pretraining corpus: an endless, seeded stream of ASCII documents, each
ending in EOS_TOKEN, written from series.

    docs = generate_corpus(100, seed=0)                  # the first 100 documents
    for doc in iter_documents(seed, max_tokens=1536, mix=CorpusMix()): ...

Kinds of document (`MIX`):
    forecast (80%): forecast_prompt(history, H) + forecast_answer(future) over windows of
                    synthetic series (sines, trends, AR(1), regime shifts, spikes, ECG-like,
                    accelerometer-like) and, when shared/data is present, of real series:
                    ETTh1/ETTh2 (7 columns each) and M4 Hourly train rows. Only the first 60%
                    of each ETT file and of each M4 train row is read, so evaluation windows
                    taken from the last 40% (and the M4 test file) are never seen in training.
    caption  (10%): the series description line, half the time its values, and a caption
                    sentence made from statistics (trend, dominant FFT period, min/max); with
                    `CorpusMix(captions="hierarchical")` instead a hierarchical caption
                    (data/captions/) in a variant drawn from statistics / structure / both, asked
                    for as stage 2 asks.
    qa       (10%): description + values + "Question: ... Answer: ..." (max, min, first, last,
                    length, trend, period, argmax).
Every document fits in `max_tokens` tokens of the byte-level default tokenizer (one token per byte,
plus EOS; long histories are shortened). `CorpusMix`'s fields (history and horizon ranges, the
share of real windows, the share of synthetic windows that are repeated shapes, the share of real
windows from ETT) change the stream; at their defaults it is the stream default-v5-base was
trained on. Changing the order of any draw here changes the corpus the committed backbones were
built from (tests/test_sources.py::test_default_corpus_unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np

from specdifftree.data.codec import NumberCodec
from specdifftree.data.features import caption, dominant_period, trend_word
from specdifftree.data.prompts import describe, forecast_answer, forecast_codec, forecast_prompt
from specdifftree.data.splits import ETT_FRACTIONS, m4_is_eval
from specdifftree.data.synthetic import periodic_series, synthetic_series
from specdifftree.paths import default_data_dir as data_dir

EOS_TOKEN = "<|endoftext|>"  # ends every document; the default tokenizer's EOS (prior/tokenizer.py)
ETT_TRAIN_FRACTION = ETT_FRACTIONS["prior"][1]  # share of each ETT file / M4 train row the corpus may read
MIX = {"forecast": 0.8, "caption": 0.1, "qa": 0.1}
_AUTO = "auto"


@dataclass(frozen=True)
class CorpusMix:
    """What a corpus document is drawn from (the corpus fields of `BackbonePreset`)."""

    captions: str = "sentence"  # "sentence" (one templated sentence) or "hierarchical"
    real_share: float = 0.6  # see `_window`
    history: tuple = (24, 192)  # history lengths, log-uniform in [lo, hi]
    horizon: tuple = (8, 96)  # forecast lengths, uniform in [lo, hi]
    periodic_share: float = 0.0  # see `_window`
    ett_share: float = 0.0  # see `_window`



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
    """A data/captions/ caption of x in a variant drawn uniformly from those of a series without
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

"""The curriculum's stage datasets, built offline from real series and seeded generators.

    examples = build_stage("stage3_cot", "train", n=512, seed=0, data_dir=default_data_dir())
    parse_label("stage3_cot", generated_text)  # -> "walking" | ... | None

Each example follows the OpenTSLM prompt structure (`data/example.py`). Questions, captions and
rationales are computed from the series itself (statistics, trend, spikes, FFT period, band
powers, detected beats), and labels come from the source where it has them (accelerometer
activity labels, ECG beat annotations) or from the generator that built the series.

| stage             | series (length)                        | answer ends with        | options           |
|-------------------|----------------------------------------|-------------------------|-------------------|
| stage1_mcq        | 1 (context_length)                     | "Answer: upward"        | 3 per question    |
| stage2_captioning | 1 (context_length)                     | a hierarchical caption  | -                 |
| stage3_cot        | 3 axes (2 * context_length, 52 Hz)     | "Answer: walking"       | ACTIVITIES        |
| stage4_sleep_cot  | 1 EEG (2 * context_length, 64 Hz)      | "Answer: n2"            | SLEEP_STAGES      |
| stage5_ecg_cot    | 1 ECG lead (2 * context_length, 48 Hz) | "Answer: premature"     | ECG_RHYTHMS       |
| stage6_forecast   | 1 (context_length history)             | the next `horizon` values (number codec) | - |

Classification labels are balanced: example i has label options[i % k] (then the list is shuffled),
so chance accuracy is 1 / k. Stage 1's options are per question (`Example.options`, 3 each, the
correct one's value drawn uniformly): chance is 1/3. Real windows are used for about half the examples when `data_dir`
holds them; the rest (and everything when `data_dir` is None) come from `data/synthetic.py`.

Real series (data_dir, read by `data/stage_sources.py`): shared/data's layout (ett/, m4/,
har_chest_acc/, ecg/) and any CSV files directly in data_dir (every numeric column is a series;
used by stages 1, 2 and 6), split as `data/splits.py` says; generated series use a different seed
per split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np

from specdifftree.data.example import STAGES, Example
from specdifftree.data.features import dominant_period, spike_word, trend_word
from specdifftree.data.prompts import forecast_answer, forecast_codec, forecast_prompt
from specdifftree.data.stage_sources import (ECG_FS, EEG_FS, HAR_FS, check_data_dir, draw_window, ecg_windows,
                                             har_segments, univariate_groups)
from specdifftree.data.synthetic import (ACTIVITIES, ECG_RHYTHMS, SLEEP_STAGES, accelerometer, ar_noise, ecg, eeg,
                                         seasonality, spikes, synthetic_series, trend)
from specdifftree.errors import SDTError

SplitName = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = ("train", "val", "test")
MCQ_CHOICES = 3  # options per stage-1 question (chance 1/3)
OPTIONS: dict[str, tuple[str, ...]] = {
    "stage3_cot": ACTIVITIES, "stage4_sleep_cot": SLEEP_STAGES,
    "stage5_ecg_cot": ECG_RHYTHMS,
}
REAL_SHARE = 0.5  # share of examples drawn from real windows when data_dir has them
_ANSWER = re.compile(r"Answer:\s*\(?\s*([A-Za-z0-9_ -]*?)\s*\)?\s*\.?\s*$")


def build_stage(name: str, split: SplitName, n: int, seed: int = 0, data_dir: Optional[Path] = None,
                horizon: int = 24, context_length: int = 96, upstream: bool = False) -> list[Example]:
    """n deterministic examples of stage `name` for `split`. data_dir None: generators only
    (pass `default_data_dir()` for the shared real data). upstream: the official OpenTSLM data
    instead (`data/upstream.py`; needs the network on first use; stages 1-5 only)."""
    if name not in STAGES:
        raise SDTError(f"unknown stage '{name}' (choose from {', '.join(STAGES)})")
    if split not in SPLITS:
        raise SDTError(f"unknown split '{split}' (choose from {', '.join(SPLITS)})")
    if context_length < 16 or horizon < 1 or n < 0:
        raise SDTError(f"build_stage needs context_length >= 16, horizon >= 1 and n >= 0 "
                       f"(got {context_length}, {horizon}, {n})")
    if upstream:
        from specdifftree.data.upstream import load_upstream

        return load_upstream(name, split, n, seed)
    rng = np.random.default_rng([seed, SPLITS.index(split), STAGES.index(name)])
    root = Path(data_dir) if data_dir is not None else None
    if root is not None:
        check_data_dir(root)
    make = _BUILDERS[name]
    out = [make(rng, i, _Ctx(root, split, horizon, context_length)) for i in range(n)]
    order = rng.permutation(n)
    return [out[k] for k in order]


def draw_example(name: str, rng: np.random.Generator, i: int, root: Optional[Path], split: SplitName = "train",
                 context_length: int = 96, horizon: int = 24) -> Example:
    """One example of stage `name` drawn with rng by the builder `build_stage` uses (i picks the
    label of a label stage: options[i % k]), from `split`'s real windows (root None: generators
    only). For corpora that write stage-like text (`data/text_corpus.py`)."""
    return _BUILDERS[name](rng, i, _Ctx(root, split, horizon, context_length))


def parse_label(stage: str, text: str, options: Sequence[str] = ()) -> Optional[str]:
    """The label a generated answer ends with ("... Answer: (b)" -> "b", "Answer: walking" ->
    "walking"), matched case-insensitively against `options` (default: the stage's offline
    OPTIONS; pass `Example.options` for upstream data), or None when the text ends with none."""
    options = tuple(options) or OPTIONS.get(stage, ())
    tail = str(text).strip().splitlines()[-1:] or [""]
    m = _ANSWER.search(tail[0])
    said = m.group(1).strip().lower() if m else None
    return next((o for o in options if o.lower() == said), None)


@dataclass
class _Ctx:
    """What every builder needs: where the real data is, the split, and the lengths."""

    root: Optional[Path]
    split: str
    horizon: int
    length: int  # context_length

    def real(self, rng: np.random.Generator, pool: list) -> bool:
        """Whether this example is drawn from `pool` (real windows)."""
        return bool(pool) and rng.random() < REAL_SHARE


# --------------------------------------------------------------------------- stage 1: MCQ


@dataclass
class _Mcq:
    x: np.ndarray                  # [n] the series
    question: str
    right: str                     # the correct choice, computed from x
    candidates: list[str]          # right + distractors
    reason: str                    # one short sentence computed from x
    shows: str                     # the property value x shows (compared with the wanted target)


def _mcq_trend(rng, x: Optional[np.ndarray], n: int, target: str) -> _Mcq:
    words = {"up": "upward", "down": "downward", "flat": "flat"}
    if x is None:
        base = seasonality(rng, n, int(rng.integers(1, 3))) + ar_noise(rng, n, 0.7, 0.3)
        change = {"up": 1.0, "down": -1.0, "flat": 0.0}[target] * rng.uniform(2.0, 5.0) * base.std()
        x = base + trend(n, change)
    shows = trend_word(x)
    change = np.polyfit(np.arange(n), x, 1)[0] * (n - 1) / (x.std() + 1e-12)
    return _Mcq(x, "What is the overall trend of the series?", words[shows], list(words.values()),
                f"The fitted line changes by {change:+.1f} std.", shows)


def _mcq_spikes(rng, x: Optional[np.ndarray], n: int, target: str) -> _Mcq:
    words = {"none": "no spikes", "up": "upward spikes", "down": "downward spikes"}
    if x is None:
        x = seasonality(rng, n, 1) + ar_noise(rng, n, 0.5, 0.2)
        if target != "none":
            sign = 1.0 if target == "up" else -1.0
            x = x + spikes(rng, n, 0.02, (5.0, 8.0), sign)
            x[int(rng.integers(n))] += sign * rng.uniform(6.0, 9.0)
    shows = spike_word(x)
    reason = ("No point is 4 std from the median." if shows == "none"
              else f"The largest excursion is {shows}ward, over 4 std from the median.")
    return _Mcq(x, "Does the series contain sharp spikes?", words[shows], list(words.values()), reason, shows)


def _mcq_peak(rng, x: Optional[np.ndarray], n: int, target: str) -> _Mcq:
    thirds = ["beginning", "middle", "end"]
    if x is None:
        x = 0.3 * seasonality(rng, n, 1, 3.0, n / 4) + ar_noise(rng, n, 0.8, 0.2)
        centre = (thirds.index(target) + rng.uniform(0.2, 0.8)) * n / 3
        x = x + rng.uniform(1.5, 3.0) * np.exp(-0.5 * ((np.arange(n) - centre) / (n / 30)) ** 2)
    k = int(np.argmax(x))
    shows = thirds[min(2, 3 * k // n)]
    return _Mcq(x, "Where is the maximum of the series?", shows, thirds, f"The maximum is at point {k + 1} of {n}.",
                shows)


def _mcq_period(rng, x: Optional[np.ndarray], n: int, target: str) -> Optional[_Mcq]:
    """None when a given (real) x has no dominant period."""
    while x is None or dominant_period(x) is None:
        x = np.sin(2 * np.pi * np.arange(n) / rng.uniform(4, n / 4) + rng.uniform(0, 2 * np.pi))
        x = x + ar_noise(rng, n, 0.3, 0.2)
    p = dominant_period(x)
    wrong = [q for q in (p / 2.2, p * 2.1, p * 3.2) if round(q) not in (0, round(p))]
    candidates = [f"about {q:.0f} points" for q in [p] + wrong]
    return _Mcq(x, "About how many points does one cycle of the series last?", candidates[0], candidates,
                f"The periodogram peaks at a period of {p:.1f} points.", target)


_MCQ = {"trend": (_mcq_trend, ("up", "down", "flat")), "spikes": (_mcq_spikes, ("none", "up", "down")),
        "peak": (_mcq_peak, ("beginning", "middle", "end")), "period": (_mcq_period, ("any",))}


def _stage1(rng: np.random.Generator, i: int, ctx: _Ctx) -> Example:
    """A question about one property; the wanted value of the property is drawn uniformly, and a
    real window is used only when it shows that value (else a series is generated to show it).
    The answer is the chosen option's text (not a letter, and no rationale, as in TSQA): the series
    alone, which is all the encoder sees, then determines the answer."""
    kind = list(_MCQ)[int(rng.integers(len(_MCQ)))]
    make, targets = _MCQ[kind]
    target = targets[int(rng.integers(len(targets)))]
    pool = univariate_groups(ctx.root, ctx.split) if ctx.root else ()
    source, item = "synthetic", None
    if ctx.real(rng, pool):
        for _ in range(10):
            got = draw_window(rng, pool, ctx.length)
            item = make(rng, got[1], ctx.length, target) if got else None
            if item is not None and item.shows == target:
                source = got[0]
                break
            item = None
    item = item or make(rng, None, ctx.length, target)
    wrong = [c for c in item.candidates if c != item.right]
    rng.shuffle(wrong)
    choices = wrong[: MCQ_CHOICES - 1]
    choices.insert(int(rng.integers(MCQ_CHOICES)), item.right)
    return Example(
        stage="stage1_mcq", series=[item.x], names=["The time series"],
        pre_prompt="You are given a time series and a multiple-choice question about it.",
        post_prompt=f"Question: {item.question}\nOptions: {'; '.join(choices)}\nAnswer with one of the options.",
        answer=f"Answer: {item.right}", label=item.right, options=tuple(choices),
        meta={"source": source, "kind": kind, "correct": item.right, "reason": item.reason})


# --------------------------------------------------------------------------- stage 2: captioning


STAGE2_CAP = 240  # characters per stage-2 caption: training cost grows with the answer


def _stage2(rng: np.random.Generator, i: int, ctx: _Ctx) -> Example:
    """A hierarchical caption (data/captions/) of one series, in a variant drawn uniformly from
    those a series without labels has (statistics, structure, both); the prompt says which."""
    from specdifftree.data.captions import ASK, UNLABELLED_VARIANTS, Captioned, caption_series

    pool = univariate_groups(ctx.root, ctx.split) if ctx.root else ()
    got = draw_window(rng, pool, ctx.length) if ctx.real(rng, pool) else None
    source, x = got if got else ("synthetic", synthetic_series(rng, ctx.length))
    variant = UNLABELLED_VARIANTS[int(rng.integers(len(UNLABELLED_VARIANTS)))]
    captions = caption_series(Captioned.build({"the series": x}), seed=rng)
    return Example(
        stage="stage2_captioning", series=[x], names=["The time series"],
        pre_prompt="You are given a time series.", post_prompt=ASK[variant],
        answer=captions.text(variant, STAGE2_CAP),
        meta={"source": source, "variant": variant,
              "facts": [f.to_dict() for f in captions.facts(variant, STAGE2_CAP)]})


# --------------------------------------------------------------------------- stage 3: HAR CoT

def _har_rationale(xyz: np.ndarray, fs: float) -> str:
    """Motion (std of the acceleration magnitude about its mean), the step rhythm (FFT period of
    the most active axis) and the posture (mean z) of xyz [T, 3]."""
    motion = np.linalg.norm(xyz - xyz.mean(axis=0), axis=1).std()
    p = dominant_period(xyz[:, int(np.argmax(xyz.std(axis=0)))])
    rhythm = f"a {fs / p:.1f} Hz step rhythm" if p and motion > 20 else "no step rhythm"
    return f"Motion std {motion:.0f}, {rhythm}, mean z {xyz[:, 2].mean():.0f}."


def _stage3(rng: np.random.Generator, i: int, ctx: _Ctx) -> Example:
    label = ACTIVITIES[i % len(ACTIVITIES)]
    n = 2 * ctx.length
    pool = har_segments(ctx.root, ctx.split)[label] if ctx.root and (ctx.root / "har_chest_acc").is_dir() else ()
    got = draw_window(rng, (pool,), n) if ctx.real(rng, pool) else None
    source, xyz = got if got else ("synthetic", accelerometer(rng, n, HAR_FS, label))
    return Example(
        stage="stage3_cot", series=[xyz[:, 0], xyz[:, 1], xyz[:, 2]],
        names=[f"The chest accelerometer {a}-axis" for a in "xyz"],
        pre_prompt=f"You are given {n / HAR_FS:.1f} s of chest accelerometer data (3 axes, {HAR_FS:.0f} Hz).",
        post_prompt=f"Which activity is it: {', '.join(ACTIVITIES)}? Reason briefly, then answer.",
        answer=f"{_har_rationale(xyz, HAR_FS)} Answer: {label}", label=label, options=ACTIVITIES,
        meta={"source": source})


# --------------------------------------------------------------------------- stage 4: sleep CoT

_EEG_BANDS = {"delta": (0.5, 4), "theta": (4, 8), "alpha": (8, 12), "sigma": (12, 16), "beta": (16, 30)}


def band_shares(x: np.ndarray, fs: float) -> dict[str, float]:
    """Share of the periodogram power of x [T] in each EEG band (bands above Nyquist get 0)."""
    from scipy.signal import periodogram

    f, p = periodogram(np.asarray(x, dtype=np.float64) - np.mean(x), fs)
    total = p[(f >= 0.5) & (f < 30)].sum() + 1e-12
    return {b: float(p[(f >= lo) & (f < hi)].sum() / total) for b, (lo, hi) in _EEG_BANDS.items()}


def _stage4(rng: np.random.Generator, i: int, ctx: _Ctx) -> Example:
    label = SLEEP_STAGES[i % len(SLEEP_STAGES)]
    n = 2 * ctx.length
    x = eeg(rng, n, EEG_FS, label)
    shares = sorted(band_shares(x, EEG_FS).items(), key=lambda kv: -kv[1])
    (b1, s1), (b2, s2) = shares[:2]
    return Example(
        stage="stage4_sleep_cot", series=[x], names=["The EEG Fpz-Cz channel"],
        pre_prompt=f"You are given a {n / EEG_FS:.0f} s EEG epoch sampled at {EEG_FS:.0f} Hz.",
        post_prompt=f"Which sleep stage is it: {', '.join(SLEEP_STAGES)}? Reason briefly, then answer.",
        answer=f"Power mostly {b1} ({s1:.0%}), then {b2} ({s2:.0%}). Answer: {label}", label=label,
        options=SLEEP_STAGES, meta={"source": "synthetic"})


# --------------------------------------------------------------------------- stage 5: ECG CoT

def r_peaks(x: np.ndarray, fs: float) -> np.ndarray:
    """Sample positions of R peaks in one ECG lead x [T]: maxima above half the 99th percentile
    of |x - median|, at least 0.25 s apart."""
    from scipy.signal import find_peaks

    y = np.abs(np.asarray(x, dtype=np.float64) - np.median(x))
    peaks, _ = find_peaks(y, height=0.5 * np.percentile(y, 99), distance=max(1, int(0.25 * fs)))
    return peaks.astype(np.float64)


def _ecg_rationale(beats: np.ndarray, fs: float) -> str:
    if len(beats) < 2:
        return "Fewer than two beats are visible."
    rr = np.diff(beats)
    return (f"{len(beats)} beats, about {60 * fs / np.median(rr):.0f} bpm, "
            f"shortest RR {rr.min() / np.median(rr):.0%} of the median.")


def _stage5(rng: np.random.Generator, i: int, ctx: _Ctx) -> Example:
    label = ECG_RHYTHMS[i % len(ECG_RHYTHMS)]
    n = 2 * ctx.length
    pool = ecg_windows(ctx.root, ctx.split, n)[label] if ctx.root and (ctx.root / "ecg").is_dir() else ()
    if ctx.real(rng, pool):
        source, x, beats = pool[int(rng.integers(len(pool)))]
        x = x.copy()
    else:
        source, x = "synthetic", ecg(rng, n, ECG_FS, label)
        beats = r_peaks(x, ECG_FS)
    return Example(
        stage="stage5_ecg_cot", series=[x], names=["The ECG lead"],
        pre_prompt=f"You are given {n / ECG_FS:.0f} s of one ECG lead sampled at {ECG_FS:.0f} Hz.",
        post_prompt=f"Which describes the rhythm: {', '.join(ECG_RHYTHMS)}? Reason briefly, then answer.",
        answer=f"{_ecg_rationale(beats, ECG_FS)} Answer: {label}", label=label, options=ECG_RHYTHMS,
        meta={"source": source})


# --------------------------------------------------------------------------- stage 6: forecasting


def _stage6(rng: np.random.Generator, i: int, ctx: _Ctx) -> Example:
    total = ctx.length + ctx.horizon
    pool = univariate_groups(ctx.root, ctx.split) if ctx.root else ()
    got = draw_window(rng, pool, total) if ctx.real(rng, pool) else None
    source, x = got if got else ("synthetic", synthetic_series(rng, total))
    history, future = x[:ctx.length], x[ctx.length:]
    codec = forecast_codec(history)
    return Example(
        stage="stage6_forecast", series=[history], names=["The series"], pre_prompt="", post_prompt="",
        answer=forecast_answer(future, codec), text=forecast_prompt(history, ctx.horizon, codec),
        meta={"source": source, "future": future.tolist()})


_BUILDERS = {"stage1_mcq": _stage1, "stage2_captioning": _stage2, "stage3_cot": _stage3,
             "stage4_sleep_cot": _stage4, "stage5_ecg_cot": _stage5, "stage6_forecast": _stage6}

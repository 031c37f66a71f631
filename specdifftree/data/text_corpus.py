"""The text backbone's pretraining corpus: an endless, seeded stream of ASCII documents (each ending
in EOS_TOKEN) that read series and write text, for a backbone that captions and answers as well as
forecasting (`sdt pretrain-backbone --preset text`, configs/backbone/text.yaml).

    docs = generate_text_corpus(100, seed=0)             # the first 100 documents
    for doc in iter_text_documents(seed, max_tokens=1536): ...
    kinds = [kind for kind, _ in islice(iter_text_documents(seed, with_kind=True), 100)]

Kinds of document (`TEXT_MIX`):
    series    the default corpus (`data/corpus.py`, v7's M4-weighted mix, hierarchical captions):
              forecasts as text (80%), captions and value questions, so forecasting is kept;
    stage1_mcq ... stage5_ecg_cot
              the curriculum's stage examples (`data/stages.py`, train split only) written as the
              prior sees them: prompt + answer. Multiple-choice answers about trend, spikes, peak
              and period; hierarchical captions of levels 1-2; activity, sleep-stage and rhythm
              rationales ending in "Answer: <label>";
    activity  level-3 captions of chest-accelerometer data (two activity pieces of the train split
              back to back, with their labels as events), also in the variants with levels 1-2;
    beats     level-3 captions of ECG windows from the first 60% of each annotated WFDB record
              (record 100: its atrial and ventricular premature beats), half the windows centred
              on a non-normal beat.
Only train parts are read (`data/splits.py`: the first 60% of ETT columns, accelerometer runs and
ECG records, M4 training rows not held out), so no evaluation or test window is in the corpus;
generated series come from the corpus's own seed. Documents longer than `max_tokens` tokens (one
byte one token, plus EOS) are drawn again.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np

from specdifftree.data.corpus import EOS_TOKEN, CorpusMix, make_document, real_series
from specdifftree.data.example import STAGES, Example
from specdifftree.data.stage_sources import HAR_FS, har_segments
from specdifftree.data.stages import STAGE2_CAP, draw_example
from specdifftree.paths import default_data_dir as data_dir

TEXT_MIX = {"series": 0.30, "stage1_mcq": 0.10, "stage2_captioning": 0.26, "stage3_cot": 0.08,
            "stage4_sleep_cot": 0.06, "stage5_ecg_cot": 0.08, "activity": 0.07, "beats": 0.05}
SERIES_MIX = CorpusMix(captions="hierarchical", real_share=0.75, history=(48, 256), horizon=(16, 96),
                       periodic_share=0.35)  # v7's corpus fields, with hierarchical captions
LABELLED_VARIANTS = ("high-summary", "high-all", "high+low", "high+middle")
LABELLED_CAP = 320  # characters per level-3 caption
_AUTO = "auto"


def _context_length(rng: np.random.Generator) -> int:
    """96 (the curriculum's default) half the time, else log-uniform in [48, 192]."""
    if rng.random() < 0.5:
        return 96
    return int(np.exp(rng.uniform(np.log(48), np.log(193))))


def stage_document(rng: np.random.Generator, stage: str, root: Optional[Path]) -> str:
    """A stage example of the train split as text: prompt + answer (the trainer's layout)."""
    ex = draw_example(stage, rng, int(rng.integers(1 << 30)), root, "train", _context_length(rng))
    return ex.prompt() + ex.answer


def _captioned_text(rng, channels: dict, fs: float, events, pre: str, names: list[str]) -> str:
    """pre + one description line per channel + the ask of a labelled variant, then its caption."""
    from specdifftree.data.captions import ASK, Captioned, caption_series

    variant = LABELLED_VARIANTS[int(rng.integers(len(LABELLED_VARIANTS)))]
    caps = caption_series(Captioned.build(channels, fs=fs, events=events), seed=rng)
    ex = Example(stage="", series=list(channels.values()), names=names, pre_prompt=pre,
                 post_prompt=ASK[variant], answer=caps.text(variant, LABELLED_CAP))
    return ex.prompt() + ex.answer


def activity_document(rng: np.random.Generator, root: Path) -> Optional[str]:
    """Two accelerometer pieces (train split) of different activities, 8-30 s each, captioned with
    their activities as level-3 events. None without accelerometer data."""
    from specdifftree.data.captions import Event

    segments = har_segments(root, "train") if (root / "har_chest_acc").is_dir() else {}
    acts = [a for a, pieces in segments.items() if pieces]
    if len(acts) < 2:
        return None
    parts, events, start = [], [], 0
    for act in rng.choice(acts, size=2, replace=False):
        n = int(rng.uniform(8, 30) * HAR_FS)
        pieces = [p for p in segments[act] if len(p[1]) >= n] or [max(segments[act], key=lambda p: len(p[1]))]
        xyz = pieces[int(rng.integers(len(pieces)))][1]
        lo = int(rng.integers(len(xyz) - min(n, len(xyz)) + 1))
        piece = xyz[lo:lo + n]
        parts.append(piece)
        events.append(Event(str(act), start, start + len(piece)))
        start += len(piece)
    xyz = np.concatenate(parts).astype(np.float64)
    channels = {f"{a}-axis": xyz[:, k] for k, a in enumerate("xyz")}
    pre = f"You are given {len(xyz) / HAR_FS:.1f} s of chest accelerometer data (3 axes, {HAR_FS:.0f} Hz)."
    return _captioned_text(rng, channels, HAR_FS, events, pre, [f"The {c}" for c in channels])


@lru_cache(maxsize=2)
def _ecg_records(root: Path) -> tuple:
    """(name, lead 0, fs, beat samples, beat symbols) of the first 60% of each annotated record."""
    from specdifftree.data.sources import read_wfdb
    from specdifftree.data.splits import ett_range

    out = []
    for hea in sorted((root / "ecg").glob("*.hea"), key=lambda p: p.name):
        if not hea.with_suffix(".atr").is_file():
            continue
        rec = read_wfdb(hea.with_suffix(""))
        _, hi = ett_range(len(rec.signals), "prior")
        keep = rec.beat_samples < hi
        out.append((rec.name, rec.signals[:hi, 0].astype(np.float64), float(rec.fs), rec.beat_samples[keep],
                    [s for s, k in zip(rec.beat_symbols, keep) if k]))
    return tuple(out)


def beats_document(rng: np.random.Generator, root: Path) -> Optional[str]:
    """A 6-20 s window of an annotated ECG record's train part, its non-normal beats as level-3
    events (half the windows centred on one). None without annotated records."""
    from specdifftree.data.captions import BEAT_NAMES, beat_events

    records = _ecg_records(root) if (root / "ecg").is_dir() else ()
    if not records:
        return None
    name, lead, fs, samples, symbols = records[int(rng.integers(len(records)))]
    n = int(rng.uniform(6, 20) * fs)
    odd = [t for t, s in zip(samples, symbols) if s in BEAT_NAMES]
    centre = int(odd[int(rng.integers(len(odd)))]) if odd and rng.random() < 0.5 else int(rng.integers(len(lead)))
    lo = int(np.clip(centre - int(rng.uniform(0.2, 0.8) * n), 0, len(lead) - n))
    inside = (samples >= lo) & (samples < lo + n)
    events = beat_events(samples[inside] - lo, [s for s, k in zip(symbols, inside) if k])
    pre = f"You are given {n / fs:.0f} s of one ECG lead sampled at {fs:.0f} Hz."
    return _captioned_text(rng, {"ECG lead": lead[lo:lo + n]}, fs, events, pre, ["The ECG lead"])


def make_text_document(rng: np.random.Generator, root: Optional[Path], max_tokens: int = 1536) -> tuple[str, str]:
    """(kind, document): a document of a kind drawn from TEXT_MIX (a kind whose data is missing
    falls back to a series document)."""
    kind = rng.choice(list(TEXT_MIX), p=list(TEXT_MIX.values()))
    for _ in range(20):
        if kind in STAGES:
            text = stage_document(rng, kind, root)
        elif kind == "activity" and root is not None:
            text = activity_document(rng, root)
        elif kind == "beats" and root is not None:
            text = beats_document(rng, root)
        else:
            text = None
        if text is None:
            break
        if len(text.encode("ascii")) + 1 <= max_tokens:
            return kind, text + EOS_TOKEN
    return "series", make_document(rng, real_series(root), max_tokens, SERIES_MIX)


def iter_text_documents(seed: int = 0, data: Union[str, Path, None] = _AUTO, max_tokens: int = 1536,
                        with_kind: bool = False) -> Iterator:
    """The endless, deterministic text corpus: documents, or (kind, document) with with_kind.
    data: "auto" (shared/data when present), a folder, or None for generated series only."""
    root = data_dir() if data == _AUTO else (Path(data) if data is not None else None)
    rng = np.random.default_rng([seed, 39017])
    while True:
        kind, doc = make_text_document(rng, root, max_tokens)
        yield (kind, doc) if with_kind else doc


def generate_text_corpus(n_docs: int, seed: int = 0, data: Union[str, Path, None] = _AUTO,
                         max_tokens: int = 1536) -> list[str]:
    """The first n_docs documents of `iter_text_documents(seed, data, max_tokens)`."""
    return list(islice(iter_text_documents(seed, data, max_tokens), n_docs))

"""A series' caption, level by level: statistics (low), trends and spikes (middle), labelled
events (high), and the event builders that turn labels into level-3 events.

    c = caption_series(Captioned.build({"hr": x}, fs=1 / 60), seed=0)    # Captions
    caption(x, "middle+low")                                             # one variant's text
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from specdifftree.data.captions.base import (MAX_EVENTS, MAX_SLEEP, MAX_SPIKES, Captioned, Captions, Event, Fact,
                                             Sentence, clean_name)
from specdifftree.data.captions.detect import find_spikes, find_trends
from specdifftree.data.captions.text import (EMPTY_TEMPLATES, EVENT_TEMPLATES, NO_SPIKE_TEMPLATES, NO_TREND_TEMPLATES,
                                             SPIKE_TEMPLATES, STAT_TEMPLATES, SUMMARY_TEMPLATES, TREND_TEMPLATES,
                                             decimals, fill, fmt, fmt_time, printed_tolerance)

def level_low(s: Captioned, rng: np.random.Generator) -> list[Sentence]:
    out = []
    for name, x in s.channels.items():
        finite = x[np.isfinite(x)]
        if not len(finite):
            out.append(Sentence(fill(rng, EMPTY_TEMPLATES, name=name), []))
            continue
        places = decimals(x)
        stats = {"mean": np.mean(finite), "max": np.max(finite), "min": np.min(finite), "std": np.std(finite)}
        printed = {k: fmt(float(v), places) for k, v in stats.items()}
        unit = f" ({s.units[name]})" if s.units.get(name) else ""
        facts = [Fact(1, "stat", name, k, float(v), float(v), printed_tolerance(printed[k])) for k, v in stats.items()]
        out.append(Sentence(fill(rng, STAT_TEMPLATES, name=name, unit=unit, **printed), facts))
    return out


def level_middle(s: Captioned, rng: np.random.Generator) -> list[Sentence]:
    unit, per = s.time_unit
    tol = spike_tolerance(s)
    out = []
    for name, x in s.channels.items():
        if not np.isfinite(x).any():
            continue
        trends = find_trends(x)
        for tr in trends:
            a, b = s.position(tr.start), s.position(tr.end)
            sa, sb = fmt_time(a, per), fmt_time(b, per)
            out.append(Sentence(fill(rng, TREND_TEMPLATES, name=name, tu=unit, start=sa, end=sb, dir=tr.direction),
                                [Fact(2, "trend", name, tr.direction, float(sa), float(sb))]))
        if not trends:
            out.append(Sentence(fill(rng, NO_TREND_TEMPLATES, name=name), [Fact(2, "no_trend", name)]))
        peaks = np.sort(find_spikes(x)[:MAX_SPIKES])
        for p in peaks:
            t = fmt_time(s.position(int(p)), per)
            out.append(Sentence(fill(rng, SPIKE_TEMPLATES, name=name, tu=unit, t=t),
                                [Fact(2, "spike", name, "", float(t), float(t), tol)]))
        if not len(peaks):
            out.append(Sentence(fill(rng, NO_SPIKE_TEMPLATES, name=name), [Fact(2, "no_spike", name)]))
    return out


def spike_tolerance(s: Captioned) -> float:
    """Position tolerance of a spike or point event, in time units: max(5 points, 2% of the series)."""
    return s.position(max(5.0, 0.02 * s.length))


def level_high(s: Captioned, rng: np.random.Generator) -> tuple[list[Sentence], list[Sentence]]:
    """(all events, one summary sentence) of the series' labelled events, in time order."""
    unit, per = s.time_unit
    tol = spike_tolerance(s)
    out = []
    for e in sorted(s.events, key=lambda e: (e.start, e.end)):
        label = clean_name(e.label)
        a, b = fmt_time(s.position(e.start), per), fmt_time(s.position(e.end), per)
        if e.kind == "beat":
            text = fill(rng, EVENT_TEMPLATES["beat"], label=label, tu=unit, t=a)
            out.append(Sentence(text, [Fact(3, "event", "", label, float(a), float(a), tol)]))
        else:
            text = fill(rng, EVENT_TEMPLATES.get(e.kind, EVENT_TEMPLATES["activity"]), label=label, tu=unit,
                         start=a, end=b)
            out.append(Sentence(text, [Fact(3, "event", "", label, float(a), float(b))]))
    if not s.events:
        return out, []
    durations: dict[str, float] = {}
    for e in s.events:
        durations[clean_name(e.label)] = durations.get(clean_name(e.label), 0.0) + e.end - e.start
    labels = sorted(durations, key=lambda k: -durations[k])
    summary = fill(rng, SUMMARY_TEMPLATES, labels=", ".join(labels), label=labels[0], tu=unit,
                    dur=fmt_time(s.position(durations[labels[0]]), per))
    return out, [Sentence(summary, [Fact(3, "present", "", k) for k in labels])]


def label_runs(labels: np.ndarray, names: Mapping[int, str], fs: float, min_seconds: float = 10.0,
               keep: int = MAX_EVENTS, kind: str = "activity", skip: Iterable[int] = (0,)) -> list[Event]:
    """Events from per-sample integer labels [T]: runs of one label (`skip` labels ignored) lasting
    at least min_seconds; the `keep` longest, in time order."""
    labels = np.asarray(labels)
    if not len(labels):
        return []
    cuts = np.flatnonzero(np.diff(labels)) + 1
    skip = set(skip)
    runs = [(int(a), int(b)) for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(labels)])
            if int(labels[a]) not in skip and (b - a) / fs >= min_seconds]
    runs = sorted(sorted(runs, key=lambda r: -(r[1] - r[0]))[:keep])
    return [Event(names.get(int(labels[a]), f"label {int(labels[a])}"), a, b, kind) for a, b in runs]


def sleep_periods(stages: Sequence[str], fs: float, wake: str = "wake", min_seconds: float = 600.0) -> list[Event]:
    """Sleep periods from per-sample sleep stage names: runs of non-wake samples of at least
    min_seconds; the MAX_SLEEP longest, in time order, labelled with their most common stage."""
    asleep = np.array([str(v).lower() != wake for v in stages], dtype=np.int64)
    events = label_runs(asleep, {1: "sleep"}, fs, min_seconds, MAX_SLEEP, "sleep", skip=(0,))
    out = []
    for e in events:
        values, counts = np.unique(np.asarray(stages[e.start:e.end], dtype=str), return_counts=True)
        out.append(Event(f"mostly {values[int(np.argmax(counts))]}", e.start, e.end, "sleep"))
    return out


BEAT_NAMES = {"A": "atrial premature", "a": "aberrated atrial premature", "J": "nodal premature",
              "S": "supraventricular premature", "V": "premature ventricular", "F": "fusion",
              "E": "ventricular escape", "j": "nodal escape", "L": "left bundle branch block",
              "R": "right bundle branch block", "/": "paced", "f": "fusion of paced and normal", "Q": "unclassifiable"}


def beat_events(samples: np.ndarray, symbols: Sequence[str], keep: int = MAX_EVENTS) -> list[Event]:
    """Point events of the annotated beats that are not normal ('N'), at most `keep` (the first)."""
    out = [Event(BEAT_NAMES[s], int(t), int(t), "beat") for t, s in zip(samples, symbols) if s in BEAT_NAMES]
    return out[:keep]


def caption_series(s: Captioned, seed: Union[int, np.random.Generator] = 0) -> Captions:
    """Every level's sentences for s; the same seed gives the same captions."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    with np.errstate(all="ignore"):
        low = level_low(s, rng)
        middle = level_middle(s, rng)
        high, summary = level_high(s, rng)
    return Captions({"low": low, "middle": middle, "high": high, "high-summary": summary}, s.time_unit[0])


def caption(x, variant: str = "all", seed: Union[int, np.random.Generator] = 0, fs: Optional[float] = None,
            name: str = "the series") -> str:
    """One variant's caption text of a single series x [T]."""
    return caption_series(Captioned.build({name: x}, fs=fs), seed).text(variant)

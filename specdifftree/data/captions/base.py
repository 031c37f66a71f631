"""What a caption is made of: the captioned series (`Captioned`, `Event`), the facts and
sentences of a caption (`Fact`, `Sentence`, `Captions`), and the levels, variants and limits
(the package docstring says what each level and variant holds).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from specdifftree.errors import SDTError

LEVELS = ("low", "middle", "high")
MAX_POINTS = 64  # downsampled points for trend detection
TREND_WINDOWS = (6, 8, 12)
MAX_TRENDS = 3
MAX_SPIKES = 5
MAX_EVENTS = 5
MAX_SLEEP = 2
MAX_POINTS_TOTAL = 50_000_000  # longer series are refused (memory)
VARIANTS: dict[str, tuple[tuple[str, ...], int]] = {  # variant -> (levels, length cap in characters)
    "low": (("low",), 400),
    "middle": (("middle",), 500),
    "high-summary": (("high-summary",), 200),
    "high-all": (("high",), 500),
    "middle+low": (("low", "middle"), 700),
    "high+low": (("high-summary", "low"), 600),
    "high+middle": (("high-summary", "middle"), 700),
    "all": (("high-summary", "low", "middle", "high"), 1000),
}
UNLABELLED_VARIANTS = ("low", "middle", "middle+low")  # the variants a series without labels has
ASK = {  # what a prompt asks for, per variant
    "low": "Describe its statistics: mean, max, min and std.",
    "middle": "Describe its trends and spikes, with their positions.",
    "middle+low": "Describe its statistics, then its trends and spikes with their positions.",
    "high-summary": "Summarise the labelled events.", "high-all": "List the labelled events with their times.",
    "high+low": "Summarise the labelled events, then describe the statistics.",
    "high+middle": "Summarise the labelled events, then describe the trends and spikes.",
    "all": "Describe the events, statistics, trends and spikes.",
}
ALIASES = {"high": "high-all", "statistical": "low", "structural": "middle", "semantic": "high-all"}
UNITS = (("second", 1.0), ("minute", 60.0), ("hour", 3600.0))
MAX_UNITS = 1500  # a day of minutes is written in minutes


@dataclass
class Event:
    """A labelled span [start, end) in samples of the series; a point event has end == start."""

    label: str
    start: int
    end: int
    kind: str = "activity"  # "activity" | "sleep" | "beat"


@dataclass
class Captioned:
    """What is captioned: named channels [T] each (NaN = missing), their units, the sampling rate
    in Hz (None: positions are points) and the labelled events (level 3)."""

    channels: dict[str, np.ndarray]
    units: dict[str, str] = field(default_factory=dict)
    fs: Optional[float] = None
    events: list[Event] = field(default_factory=list)

    @classmethod
    def build(cls, channels: Union[Mapping[str, Sequence[float]], Sequence[float], np.ndarray],
              units: Optional[Mapping[str, str]] = None, fs: Optional[float] = None,
              events: Iterable[Event] = ()) -> "Captioned":
        """Checked input: an SDTError says why a series cannot be captioned (no channel, different
        lengths, no finite value at all, a non-positive or non-finite fs, too long)."""
        if not isinstance(channels, Mapping):
            channels = {"the series": channels}
        if not channels:
            raise SDTError("nothing to caption: give at least one channel")
        out: dict[str, np.ndarray] = {}
        for name, values in channels.items():
            try:
                x = np.asarray(values, dtype=np.float64)
            except (TypeError, ValueError):
                raise SDTError(f"channel '{name}' is not numeric") from None
            if x.ndim != 1 or len(x) == 0:
                raise SDTError(f"channel '{name}' must be a non-empty 1-D series, got shape {x.shape}")
            out[clean_name(str(name))] = np.where(np.isfinite(x), x, np.nan)
        lengths = {len(x) for x in out.values()}
        if len(lengths) > 1:
            raise SDTError(f"channels have different lengths ({sorted(lengths)}); caption them separately")
        if lengths.pop() > MAX_POINTS_TOTAL:
            raise SDTError(f"the series has more than {MAX_POINTS_TOTAL} points; caption a window of it")
        if all(np.isnan(x).all() for x in out.values()):
            raise SDTError("the series has no finite value; nothing to caption")
        if fs is not None and not (math.isfinite(fs) and fs > 0):
            raise SDTError(f"the sampling rate must be a positive number of Hz, got {fs}")
        names = dict(zip(channels, out))
        return cls(out, {names[k]: v for k, v in (units or {}).items() if k in names}, fs, list(events))

    @property
    def length(self) -> int:
        return len(next(iter(self.channels.values())))

    @property
    def time_unit(self) -> tuple[str, float]:
        """(unit word, points per unit): ("point", 1) without fs, else the first of second /
        minute / hour in which the whole series lasts at most MAX_UNITS units (hours beyond)."""
        if self.fs is None:
            return "point", 1.0
        seconds = self.length / self.fs
        word, per = next(((w, u) for w, u in UNITS if seconds / u <= MAX_UNITS), UNITS[-1])
        return word, per * self.fs

    def position(self, index: float) -> float:
        """A sample index in the time unit."""
        return index / self.time_unit[1]


def clean_name(name: str) -> str:
    """A channel or label name the parser can read back: no sentence punctuation or brackets."""
    name = re.sub(r"[.,;:()\[\]]+", " ", name)
    return re.sub(r"\s+", " ", name).strip() or "channel"


@dataclass
class Fact:
    """One checkable statement: level 1-3; kind stat | trend | no_trend | spike | no_spike | event;
    key: the statistic, the direction ("increasing" / "decreasing") or the label; start/end: the
    value (stat) or the span in time units; tol: the value tolerance (stat) or position tolerance."""

    level: int
    kind: str
    channel: str
    key: str = ""
    start: float = 0.0
    end: float = 0.0
    tol: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "Fact":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class Sentence:
    text: str
    facts: list[Fact]


@dataclass
class Captions:
    """Sentences per level ('low', 'middle', 'high', 'high-summary') of one series."""

    levels: dict[str, list[Sentence]]
    unit: str

    def sentences(self, variant: str = "all", cap: Optional[int] = None) -> list[Sentence]:
        """The variant's sentences, each level capped so the whole fits the variant's cap (or
        `cap` characters, when smaller)."""
        parts, cap_ = VARIANTS[resolve_variant(variant)]
        cap = min(cap_, cap) if cap else cap_
        chosen = [s for p in parts for s in self.levels.get(p, [])[:1]]  # every level's first sentence
        used = sum(len(s.text) + 1 for s in chosen)
        for p in parts:
            for s in self.levels.get(p, [])[1:]:
                if used + len(s.text) + 1 <= cap:
                    chosen.append(s)
                    used += len(s.text) + 1
        order = {id(s): i for i, s in enumerate(x for p in parts for x in self.levels.get(p, []))}
        return sorted(chosen, key=lambda s: order[id(s)])

    def text(self, variant: str = "all", cap: Optional[int] = None) -> str:
        return " ".join(s.text for s in self.sentences(variant, cap))

    def facts(self, variant: str = "all", cap: Optional[int] = None) -> list[Fact]:
        return [f for s in self.sentences(variant, cap) for f in s.facts]

    def available(self) -> list[str]:
        """Variants whose every level has sentences here (no level-3 variant without labels)."""
        return [v for v, (parts, _) in VARIANTS.items() if all(self.levels.get(p) for p in parts)]


def resolve_variant(variant: str) -> str:
    v = ALIASES.get(variant, variant)
    if v not in VARIANTS:
        raise SDTError(f"unknown caption level '{variant}' (choose from {', '.join([*VARIANTS, *ALIASES])})")
    return v

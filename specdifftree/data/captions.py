"""Hierarchical automatic captions of a (multichannel) series, as in SensorLM's pipeline.

    s = Captioned.build({"heart rate": hr}, units={"heart rate": "bpm"}, fs=1 / 60)
    c = caption_series(s, seed=0)            # Captions: one sentence list per level
    c.text("middle+low")                     # a variant, capped at its length
    score_caption(generated_text, c.facts("middle+low"), s.time_unit)   # fact accuracy per level

Levels (sentence templates are drawn with a seeded generator; every sentence carries the facts
it states, so a caption's facts are exactly those of the sentences it kept):

- low (1, statistical): per channel mean, max, min and std in the channel's unit, NaN ignored,
  printed at `decimals(channel)` places (fixed point, or 4 significant digits in e notation when
  the scale is tiny or huge).
- middle (2, structural): trends and spikes with positions, per channel.
  Trends: spike points are left out, the channel is downsampled to at most MAX_POINTS (64) points
  (means over equal bins, NaN ignored); a least-squares line (numpy.linalg.lstsq) is fitted to
  every window of 6, 8 and 12 downsampled points; a window is steep when |slope| per downsampled
  point >= scale * range / 40 (range of the downsampled channel, TrendConfig.scale = 1); each run
  of overlapping steep windows of one direction is cut to its largest rise (fall) of the 3-point
  moving average, trimmed to where that passes 5% of the rise and stays 5% below its top; runs
  less than 6 points apart that keep going join; a span is a trend when its least-squares change
  is >= 20% of the range and its slope >= 5 standard errors; the top 3 by |change| that do not
  overlap are kept, in time order.
  Spikes: `scipy.signal.find_peaks` on the raw channel (NaN filled with the channel's minimum) with
  prominence >= 0.5 * range, height >= mean + 0.6 * range and distance >= 5 points; at most
  MAX_SPIKES (the most prominent) are stated.
- high (3, semantic): labelled events the source carries (`Event`): activities over a minimum
  duration (the longest kept), sleep periods (at most 2), annotated beats. Empty without labels.

Variants (VARIANTS): low; middle; high-summary; high-all; middle+low; high+low; high+middle;
all, each with a length cap in characters (whole sentences are dropped from the end of each
level, the first sentence of each level always kept).

Time is written in the series' unit (`time_unit`): points without a sampling rate; else
seconds, minutes or hours: the first in which the whole series lasts at most 1500 of them.

Fact accuracy (`score_caption`): the facts parsed back from a generated caption (the templates'
own regular expressions) are matched one to one against the reference facts; the score of a level
is matched / (reference facts + unmatched generated facts), so both missing and invented facts
count against it. A statistic matches when it names the same channel and statistic and its value
is within half a unit of the reference's last printed digit; a trend when channel and direction
agree and the spans' intersection over union is >= 0.5; a spike when it lies within
max(5 points, 2% of the series) of the reference; "no trend" / "no spike" when stated for the same
channel; an event when its label agrees and the spans' IoU is >= 0.5 (points within the spike tolerance).
"""

from __future__ import annotations

import math
import re
import warnings
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
_NUM = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?"


# --------------------------------------------------------------------------- inputs


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
            out[_clean_name(str(name))] = np.where(np.isfinite(x), x, np.nan)
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


def _clean_name(name: str) -> str:
    """A channel or label name the parser can read back: no sentence punctuation or brackets."""
    name = re.sub(r"[.,;:()\[\]]+", " ", name)
    return re.sub(r"\s+", " ", name).strip() or "channel"


# --------------------------------------------------------------------------- facts and sentences


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


# --------------------------------------------------------------------------- templates

STAT_TEMPLATES = (
    "{name}{unit} mean, max, min, std are {mean}, {max}, {min}, {std}.",
    "The mean of {name}{unit} is {mean}, ranging from {min} to {max}, with a standard deviation of {std}.",
    "{Name}{unit} averages {mean} with std {std}, between a minimum of {min} and a maximum of {max}.",
)
EMPTY_TEMPLATES = ("{Name} has no valid values.",)
TREND_TEMPLATES = (
    "From {tu} {start} to {end}, {name} exhibits {a_dir} trend.",
    "{Name} {verb} between {tu} {start} and {end}.",
    "{A_dir} trend in {name} spans {tu}s {start} to {end}.",
)
NO_TREND_TEMPLATES = ("{Name} shows no clear trend.", "No clear trend is found in {name}.")
SPIKE_TEMPLATES = ("A spike is detected for {name} at {tu} {t}.", "{Name} spikes at {tu} {t}.")
NO_SPIKE_TEMPLATES = ("No spike is detected for {name}.", "{Name} has no spikes.")
EVENT_TEMPLATES = {
    "activity": ("{Label} was detected between {tu}s {start} and {end}.",
                 "From {tu} {start} to {end}, the activity was {label}."),
    "sleep": ("Sleep ({label}) lasted from {tu} {start} to {end}.",),
    "beat": ("{A_label} beat was annotated at {tu} {t}.",),
}
SUMMARY_TEMPLATES = ("The recording shows {labels}; the longest is {label}, {dur} {tu}s.",)

_FIELDS = {
    "name": r"(?P<name>[^.,;()]+?)", "Name": r"(?P<name>[^.,;()]+?)",
    "unit": r"(?: \((?P<unit>[^)]*)\))?",
    "mean": f"(?P<mean>{_NUM})", "max": f"(?P<max>{_NUM})", "min": f"(?P<min>{_NUM})", "std": f"(?P<std>{_NUM})",
    "tu": r"(?P<tu>point|second|minute|hour)", "start": f"(?P<start>{_NUM})", "end": f"(?P<end>{_NUM})",
    "t": f"(?P<t>{_NUM})", "dur": f"(?P<dur>{_NUM})",
    "a_dir": r"an? (?P<dir>increasing|decreasing)", "A_dir": r"an? (?P<dir>increasing|decreasing)",
    "verb": r"(?P<verb>rises|falls)",
    "label": r"(?P<label>[^.,;()]+?)", "Label": r"(?P<label>[^.,;()]+?)",
    "A_label": r"an? (?P<label>[^.,;()]+?)", "labels": r"(?P<labels>[^;]+?)",
}


def _regex(template: str) -> re.Pattern:
    """The template as a case-insensitive regular expression with one group per field."""
    out, pos = [], 0
    for m in re.finditer(r"\{(\w+)\}", template):
        out.append(re.escape(template[pos:m.start()]))
        out.append(_FIELDS[m.group(1)])
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out), re.IGNORECASE)


def _fill(rng: np.random.Generator, templates: Sequence[str], **kw) -> str:
    """A random template filled in; {Name}-style fields get a capital first letter."""
    template = templates[int(rng.integers(len(templates)))]
    values = dict(kw)
    for k, v in kw.items():
        values[k[0].upper() + k[1:]] = _cap(str(v))
    if "dir" in kw:
        values["a_dir"] = f"{_article(kw['dir'])} {kw['dir']}"
        values["A_dir"] = _cap(values["a_dir"])
        values["verb"] = "rises" if kw["dir"] == "increasing" else "falls"
    if "label" in kw:
        values["A_label"] = _cap(f"{_article(kw['label'])} {kw['label']}")
    return _cap(template.format(**values))


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


# --------------------------------------------------------------------------- numbers


def decimals(x: np.ndarray) -> Optional[int]:
    """Fixed-point places for a channel's numbers (2 significant digits of its range, or of its
    largest magnitude when the range is 0), or None for e notation (scale under 1e-4 or over 1e9)."""
    finite = x[np.isfinite(x)]
    scale = float(np.ptp(finite)) if len(finite) else 0.0
    scale = scale if scale > 0 else float(np.max(np.abs(finite))) if len(finite) else 0.0
    if scale == 0:
        return 1
    if scale < 1e-4 or scale > 1e9:
        return None
    return int(min(8, max(0, 2 - math.floor(math.log10(scale)))))


def fmt(v: float, places: Optional[int]) -> str:
    s = f"{v:.{places}f}" if places is not None else f"{v:.4g}"
    return "0" if re.fullmatch(r"-?0(\.0*)?", s) else s


def printed_tolerance(s: str) -> float:
    """Half a unit of the last digit printed in s ('72.3' -> 0.05, '1.5e+03' -> 50)."""
    mant, _, exp = s.lower().partition("e")
    places = len(mant.split(".")[1]) if "." in mant else 0
    return 0.5 * 10.0 ** (-places + (int(exp) if exp else 0)) * (1 + 1e-9)


def fmt_time(t: float, per_unit: float) -> str:
    """A position in time units, with enough places (at most 2) to tell samples apart."""
    places = min(2, max(0, math.ceil(math.log10(per_unit)))) if per_unit > 1 else 0
    text = f"{t:.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


# --------------------------------------------------------------------------- level 1


def level_low(s: Captioned, rng: np.random.Generator) -> list[Sentence]:
    out = []
    for name, x in s.channels.items():
        finite = x[np.isfinite(x)]
        if not len(finite):
            out.append(Sentence(_fill(rng, EMPTY_TEMPLATES, name=name), []))
            continue
        places = decimals(x)
        stats = {"mean": np.mean(finite), "max": np.max(finite), "min": np.min(finite), "std": np.std(finite)}
        printed = {k: fmt(float(v), places) for k, v in stats.items()}
        unit = f" ({s.units[name]})" if s.units.get(name) else ""
        facts = [Fact(1, "stat", name, k, float(v), float(v), printed_tolerance(printed[k])) for k, v in stats.items()]
        out.append(Sentence(_fill(rng, STAT_TEMPLATES, name=name, unit=unit, **printed), facts))
    return out


# --------------------------------------------------------------------------- level 2


@dataclass
class TrendConfig:
    windows: tuple[int, ...] = TREND_WINDOWS
    scale: float = 1.0  # slope threshold = scale * range / 40 per downsampled point
    max_points: int = MAX_POINTS
    top: int = MAX_TRENDS
    gap: int = 6  # spans of one direction this close that keep going join (a noisy ramp's windows are not all steep)
    trim: float = 0.05  # span ends: the last point before the values pass 5% of the rise, the first after they stay 5% below its top
    min_t: float = 5.0  # a span's least-squares slope must be min_t standard errors from 0
    min_change: float = 0.2  # and at least this share of the range


@dataclass
class Trend:
    direction: str  # "increasing" | "decreasing"
    start: int      # first sample (raw index)
    end: int        # last sample (raw index)
    change: float   # total change of the fitted line over the span


def downsample(x: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, int]:
    """(bin means [<= max_points], bin width): NaN ignored; a bin with no finite value is NaN."""
    bin_ = max(1, math.ceil(len(x) / max_points))
    n = math.ceil(len(x) / bin_)
    padded = np.full(n * bin_, np.nan)
    padded[: len(x)] = x
    blocks = padded.reshape(n, bin_)
    counts = np.isfinite(blocks).sum(axis=1)
    sums = np.where(np.isfinite(blocks), blocks, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan), bin_


def find_trends(x: np.ndarray, cfg: TrendConfig = TrendConfig()) -> list[Trend]:
    """Trends of x [T] (see the module docstring), in time order, raw sample indices."""
    x = np.array(x, dtype=np.float64)
    for p in find_spikes(x):  # a spike is not a trend: its points are left out of the fits
        x[max(0, p - 1):p + 2] = np.nan
    d, bin_ = downsample(x, cfg.max_points)
    finite = d[np.isfinite(d)]
    range_ = float(np.ptp(finite)) if len(finite) else 0.0
    if not (range_ > 0 and math.isfinite(range_)):
        return []
    thresh = cfg.scale * range_ / 40
    spans: dict[int, list[list[int]]] = {1: [], -1: []}
    for w in cfg.windows:
        for a in range(0, len(d) - w + 1):
            slope = _slope(d[a:a + w])
            if abs(slope) >= thresh:
                spans[1 if slope > 0 else -1].append([a, a + w - 1])
    found = [r for sign, windows in spans.items() for r in _ramps(d, windows, sign, range_, cfg)]
    kept: list[tuple] = []
    for item in sorted(found, key=lambda f: (-f[0], f[2])):
        if len(kept) < cfg.top and all(item[3] < k[2] or item[2] > k[3] for k in kept):
            kept.append(item)
    n = len(x)
    return [Trend("increasing" if sign > 0 else "decreasing", min(n - 1, a * bin_ + bin_ // 2),
                  min(n - 1, b * bin_ + bin_ // 2), sign * size)
            for size, sign, a, b in sorted(kept, key=lambda k: k[2])]


def _ramps(d: np.ndarray, windows: list[list[int]], sign: int, range_: float,
           cfg: TrendConfig) -> list[tuple[float, int, int, int]]:
    """(|change|, sign, a, b) of the trends of one direction in d [n]: each run of overlapping
    steep windows is cut to its largest rise (fall) and trimmed (`_extent`); neighbours less than
    cfg.gap apart that keep going join; a span is kept when its least-squares change is at least
    cfg.min_change * range and cfg.min_t standard errors."""
    y = sign * _smooth(d)
    spans: list[list[int]] = []
    for a, b in _merge(windows, 0):
        ext = _extent(y, a, b, cfg.trim)
        if ext is None:
            continue
        if spans and ext[0] - spans[-1][1] <= cfg.gap and y[ext[1]] > y[spans[-1][1]] and y[ext[0]] > y[spans[-1][0]]:
            spans[-1][1] = ext[1]
        else:
            spans.append(list(ext))
    out = []
    for a, b in spans:
        slope, t = _fit(d[a:b + 1])
        if slope * sign * (b - a) >= cfg.min_change * range_ and t >= cfg.min_t:
            out.append((abs(slope) * (b - a), sign, a, b))
    return out


def _smooth(d: np.ndarray) -> np.ndarray:
    """A centred moving average of 3 points (NaN ignored; NaN where all three are).  -> [n]"""
    pad = np.r_[np.nan, d, np.nan]
    stack = np.stack([pad[:-2], pad[1:-1], pad[2:]])
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(stack, axis=0)


def _extent(y: np.ndarray, a: int, b: int, frac: float) -> Optional[tuple[int, int]]:
    """The largest rise of y [n] within [a, b] (i0 < i1 maximising y[i1] - y[i0]), its ends moved in
    to the last point before y first passes frac of the rise and the first point after it last stays
    frac below the top; None without a rise."""
    seg = np.where(np.isfinite(y[a:b + 1]), y[a:b + 1], np.nan)
    if np.isnan(seg).all():
        return None
    low = np.fmin.accumulate(np.where(np.isnan(seg), np.inf, seg))
    gain = np.where(np.isnan(seg), -np.inf, seg - low)
    i1 = int(np.argmax(gain))
    if not gain[i1] > 0:
        return None
    i0 = int(np.flatnonzero(seg[: i1 + 1] == low[i1])[0])
    lo, hi = seg[i0], seg[i1]
    with np.errstate(invalid="ignore"):
        up = np.flatnonzero(seg[i0:i1 + 1] > lo + frac * (hi - lo))
        down = np.flatnonzero(seg[i0:i1 + 1] < hi - frac * (hi - lo))
    s0 = i0 + max(0, int(up[0]) - 1) if len(up) else i0
    s1 = i0 + min(i1 - i0, int(down[-1]) + 1) if len(down) else i1
    return (a + s0, a + s1) if s1 > s0 else (a + i0, a + i1)


def _fit(y: np.ndarray) -> tuple[float, float]:
    """(slope, |slope| / its standard error) of the least-squares line (numpy.linalg.lstsq) through
    the finite points of y [w]; (0, 0) with fewer than 3 of them."""
    t = np.flatnonzero(np.isfinite(y))
    if len(t) < 3:
        return 0.0, 0.0
    a = np.stack([t.astype(np.float64), np.ones(len(t))], axis=1)
    coef = np.linalg.lstsq(a, y[t], rcond=None)[0]
    resid = float(np.sum((a @ coef - y[t]) ** 2))
    sxx = float(np.sum((t - t.mean()) ** 2))
    se = math.sqrt(resid / max(1, len(t) - 2) / sxx)
    slope = float(coef[0])
    return slope, (abs(slope) / se if se > 0 else math.inf)


def _slope(y: np.ndarray) -> float:
    """Least-squares slope (numpy.linalg.lstsq) of the finite points of y [w]; NaN with fewer
    than half of them (or 2) finite."""
    t = np.flatnonzero(np.isfinite(y))
    if len(t) < max(2, len(y) // 2):
        return math.nan
    a = np.stack([t.astype(np.float64), np.ones(len(t))], axis=1)
    return float(np.linalg.lstsq(a, y[t], rcond=None)[0][0])


def _merge(windows: list[list[int]], gap: int) -> list[tuple[int, int]]:
    """Spans [a, b] covering the windows, joining those less than `gap` points apart."""
    out: list[list[int]] = []
    for a, b in sorted(windows):
        if out and a <= out[-1][1] + gap:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def find_spikes(x: np.ndarray, ref: Optional[np.ndarray] = None) -> np.ndarray:
    """Sample indices of spikes in x [T] (find_peaks, module docstring), most prominent first; the
    mean and range of the thresholds come from `ref` when given (default x).  -> [K] int"""
    from scipy.signal import find_peaks

    x = np.asarray(x, dtype=np.float64)
    finite = x[np.isfinite(x)] if ref is None else np.asarray(ref, dtype=np.float64)[np.isfinite(ref)]
    if len(finite) < 3 or np.isfinite(x).sum() < 3:
        return np.zeros(0, dtype=np.int64)
    lo, hi = float(np.min(finite)), float(np.max(finite))
    span = hi - lo
    if not (span > 0 and math.isfinite(span)):
        return np.zeros(0, dtype=np.int64)
    y = np.where(np.isfinite(x), x, np.nanmin(x))
    peaks, props = find_peaks(y, height=float(np.mean(finite)) + 0.6 * span, prominence=0.5 * span, distance=5)
    return peaks[np.argsort(-props["prominences"], kind="stable")].astype(np.int64)


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
            out.append(Sentence(_fill(rng, TREND_TEMPLATES, name=name, tu=unit, start=sa, end=sb, dir=tr.direction),
                                [Fact(2, "trend", name, tr.direction, float(sa), float(sb))]))
        if not trends:
            out.append(Sentence(_fill(rng, NO_TREND_TEMPLATES, name=name), [Fact(2, "no_trend", name)]))
        peaks = np.sort(find_spikes(x)[:MAX_SPIKES])
        for p in peaks:
            t = fmt_time(s.position(int(p)), per)
            out.append(Sentence(_fill(rng, SPIKE_TEMPLATES, name=name, tu=unit, t=t),
                                [Fact(2, "spike", name, "", float(t), float(t), tol)]))
        if not len(peaks):
            out.append(Sentence(_fill(rng, NO_SPIKE_TEMPLATES, name=name), [Fact(2, "no_spike", name)]))
    return out


def spike_tolerance(s: Captioned) -> float:
    """Position tolerance of a spike or point event, in time units: max(5 points, 2% of the series)."""
    return s.position(max(5.0, 0.02 * s.length))


# --------------------------------------------------------------------------- level 3


def level_high(s: Captioned, rng: np.random.Generator) -> tuple[list[Sentence], list[Sentence]]:
    """(all events, one summary sentence) of the series' labelled events, in time order."""
    unit, per = s.time_unit
    tol = spike_tolerance(s)
    out = []
    for e in sorted(s.events, key=lambda e: (e.start, e.end)):
        label = _clean_name(e.label)
        a, b = fmt_time(s.position(e.start), per), fmt_time(s.position(e.end), per)
        if e.kind == "beat":
            text = _fill(rng, EVENT_TEMPLATES["beat"], label=label, tu=unit, t=a)
            out.append(Sentence(text, [Fact(3, "event", "", label, float(a), float(a), tol)]))
        else:
            text = _fill(rng, EVENT_TEMPLATES.get(e.kind, EVENT_TEMPLATES["activity"]), label=label, tu=unit,
                         start=a, end=b)
            out.append(Sentence(text, [Fact(3, "event", "", label, float(a), float(b))]))
    if not s.events:
        return out, []
    durations: dict[str, float] = {}
    for e in s.events:
        durations[_clean_name(e.label)] = durations.get(_clean_name(e.label), 0.0) + e.end - e.start
    labels = sorted(durations, key=lambda k: -durations[k])
    summary = _fill(rng, SUMMARY_TEMPLATES, labels=", ".join(labels), label=labels[0], tu=unit,
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


# --------------------------------------------------------------------------- captions


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


# --------------------------------------------------------------------------- parsing and scoring

_PARSERS: list[tuple[str, re.Pattern]] = (
    [("stat", _regex(t)) for t in STAT_TEMPLATES] + [("trend", _regex(t)) for t in TREND_TEMPLATES]
    + [("no_trend", _regex(t)) for t in NO_TREND_TEMPLATES] + [("spike", _regex(t)) for t in SPIKE_TEMPLATES]
    + [("no_spike", _regex(t)) for t in NO_SPIKE_TEMPLATES]
    + [("event", _regex(t)) for ts in EVENT_TEMPLATES.values() for t in ts])


def parse_facts(text: str) -> list[Fact]:
    """The facts a caption states, read back with the templates' regular expressions (sentence by
    sentence; text that matches no template states nothing)."""
    out: list[Fact] = []
    for sentence in re.split(r"(?<=\.)\s+", str(text).strip()):
        for kind, pattern in _PARSERS:
            m = pattern.fullmatch(sentence.strip())
            if m:
                out.extend(_facts_of(kind, m.groupdict()))
                break
    return out


def _facts_of(kind: str, g: dict) -> list[Fact]:
    name = (g.get("name") or "").strip().lower()
    try:
        if kind == "stat":
            return [Fact(1, "stat", name, k, float(g[k]), float(g[k])) for k in ("mean", "max", "min", "std")]
        if kind == "trend":
            direction = g.get("dir") or ("increasing" if g.get("verb", "").lower() == "rises" else "decreasing")
            return [Fact(2, "trend", name, direction.lower(), float(g["start"]), float(g["end"]))]
        if kind == "spike":
            return [Fact(2, "spike", name, "", float(g["t"]), float(g["t"]))]
        if kind == "event":
            a = float(g.get("start") or g.get("t"))
            return [Fact(3, "event", "", g["label"].strip().lower(), a, float(g.get("end") or a))]
    except (TypeError, ValueError, OverflowError):
        return []
    return [Fact(2, kind, name)]


def _iou(a0: float, a1: float, b0: float, b1: float) -> float:
    inter = max(0.0, min(a1, b1) - max(a0, b0))
    union = max(a1, b1) - min(a0, b0)
    return inter / union if union > 0 else float(a0 == b0 and a1 == b1)


def fact_matches(ref: Fact, got: Fact) -> bool:
    if ref.level != got.level or ref.kind != got.kind or ref.channel.lower() != got.channel.lower():
        return False
    if ref.kind == "stat":
        return ref.key == got.key and abs(got.start - ref.start) <= ref.tol
    if ref.kind == "trend":
        return ref.key == got.key and _iou(ref.start, ref.end, got.start, got.end) >= 0.5
    if ref.kind == "spike":
        return abs(got.start - ref.start) <= ref.tol
    if ref.kind == "event":
        if ref.key.lower() != got.key.lower():
            return False
        if ref.start == ref.end:
            return abs(got.start - ref.start) <= ref.tol
        return _iou(ref.start, ref.end, got.start, got.end) >= 0.5
    return True  # no_trend / no_spike of the same channel


def score_caption(text: str, reference: Sequence[Fact]) -> dict[str, Optional[float]]:
    """Fact accuracy per level {"low", "middle", "high"} of a generated caption against the
    reference facts (module docstring); None for a level the reference states nothing about."""
    got = parse_facts(text)
    out: dict[str, Optional[float]] = {}
    for level, key in enumerate(LEVELS, start=1):
        ref = [f for f in reference if f.level == level and f.kind != "present"]
        gen = [f for f in got if f.level == level]
        if not ref:
            out[key] = None
            continue
        used = [False] * len(gen)
        matched = 0
        for r in ref:
            for j, g in enumerate(gen):
                if not used[j] and fact_matches(r, g):
                    used[j] = True
                    matched += 1
                    break
        out[key] = matched / (len(ref) + used.count(False))
    return out


# --------------------------------------------------------------------------- files

ACTIVITY_MIN_SECONDS = 30.0  # shorter labelled activity runs are not stated


def load_captioned(path, columns: Sequence[str] = (), fs: Optional[float] = None,
                   label_column: Optional[str] = None) -> Captioned:
    """A file as a Captioned series:
    - a WFDB record (FILE.hea / .dat / no extension with a .hea beside it): its leads with their
      units and sampling rate; its non-normal annotated beats (.atr) as level-3 events;
    - a chest-accelerometer file (no header, five numeric columns seq,x,y,z,label): axes x, y, z
      at 52 Hz, activity runs of at least 30 s from the label column (the 5 longest);
    - any other CSV with a header: its numeric columns (or `columns`); `label_column` names a
      column of labels whose runs become activity events.
    `fs` overrides the file's sampling rate (None: the file's, else positions in points)."""
    from pathlib import Path

    from specdifftree.data.sources import ACCEL_LABELS, read_accelerometer, read_wfdb

    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".hea", ".dat", ".atr") else path
    if base.with_name(base.name + ".hea").is_file():
        rec = read_wfdb(base)
        keep = _pick(list(rec.leads), columns, path)
        chans = {rec.leads[i]: rec.signals[:, i] for i in keep}
        units = {rec.leads[i]: (rec.units or [""] * len(rec.leads))[i] for i in keep}
        events = beat_events(rec.beat_samples, rec.beat_symbols) if rec.beat_samples is not None else []
        return Captioned.build(chans, units, fs or rec.fs, events)
    if _is_accelerometer(path):
        acc = read_accelerometer(path)
        keep = _pick(["x", "y", "z"], columns, path)
        chans = {f"{'xyz'[i]}-axis acceleration": acc.xyz[:, i] for i in keep}
        rate = fs or acc.fs
        events = label_runs(acc.labels, ACCEL_LABELS, rate, ACTIVITY_MIN_SECONDS)
        return Captioned.build(chans, {k: "ADC counts" for k in chans}, rate, events)
    from specdifftree.data.series import read_csv_columns

    chans = read_csv_columns(path, list(columns) or None)
    events = _label_column_events(path, label_column, fs) if label_column else []
    return Captioned.build(chans, {}, fs, events)


def _pick(names: list[str], columns: Sequence[str], path) -> list[int]:
    for c in columns:
        if c not in names:
            raise SDTError(f"{path}: no column '{c}' (columns: {', '.join(names)})")
    return [names.index(c) for c in columns] if columns else list(range(len(names)))


def _is_accelerometer(path) -> bool:
    """A header-less CSV whose first row is five numbers, the last an integer label."""
    try:
        with open(path) as f:
            first = f.readline().strip().split(",")
        values = [float(c) for c in first]
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return len(values) == 5 and values[4] == int(values[4])


def _label_column_events(path, column: str, fs: Optional[float]) -> list[Event]:
    """Runs of one non-empty label in a CSV column (at least 30 s long when fs is known)."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or column not in rows[0]:
        raise SDTError(f"{path}: no label column '{column}'")
    values = [(r.get(column) or "").strip() for r in rows]
    names = sorted({v for v in values if v})
    codes = np.array([names.index(v) + 1 if v else 0 for v in values])
    return label_runs(codes, {i + 1: n for i, n in enumerate(names)}, fs or 1.0, ACTIVITY_MIN_SECONDS if fs else 0.0)

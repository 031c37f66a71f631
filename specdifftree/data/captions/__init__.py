"""Hierarchical automatic captions of a (multichannel) series, as in SensorLM's pipeline.

    base.py    Captioned, Event (the input), Fact, Sentence, Captions, the levels and variants
    text.py    sentence templates, the regular expressions that read them back, numbers and times
    detect.py  level-2 detectors: find_trends, find_spikes
    levels.py  the three levels' sentences, caption_series / caption, events from labels
    score.py   parse_facts, score_caption (fact accuracy)
    files.py   load_captioned (WFDB, accelerometer and CSV files)

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

from specdifftree.data.captions.base import (
    ALIASES, ASK, LEVELS, MAX_EVENTS, MAX_POINTS, MAX_POINTS_TOTAL, MAX_SLEEP, MAX_SPIKES, MAX_TRENDS, MAX_UNITS,
    TREND_WINDOWS, UNITS, UNLABELLED_VARIANTS, VARIANTS, Captioned, Captions, Event, Fact, Sentence, resolve_variant
)
from specdifftree.data.captions.text import (
    EMPTY_TEMPLATES, EVENT_TEMPLATES, NO_SPIKE_TEMPLATES, NO_TREND_TEMPLATES, SPIKE_TEMPLATES, STAT_TEMPLATES,
    SUMMARY_TEMPLATES, TREND_TEMPLATES, decimals, fmt, fmt_time, printed_tolerance
)
from specdifftree.data.captions.detect import (
    Trend, TrendConfig, downsample, find_spikes, find_trends
)
from specdifftree.data.captions.levels import (
    BEAT_NAMES, beat_events, caption, caption_series, label_runs, level_high, level_low, level_middle, sleep_periods,
    spike_tolerance
)
from specdifftree.data.captions.score import (
    fact_matches, parse_facts, score_caption
)
from specdifftree.data.captions.files import (
    ACTIVITY_MIN_SECONDS, load_captioned
)

__all__ = [
    "ALIASES", "ASK", "LEVELS", "MAX_EVENTS", "MAX_POINTS", "MAX_POINTS_TOTAL", "MAX_SLEEP", "MAX_SPIKES",
    "MAX_TRENDS", "MAX_UNITS", "TREND_WINDOWS", "UNITS", "UNLABELLED_VARIANTS", "VARIANTS", "Captioned", "Captions",
    "Event", "Fact", "Sentence", "resolve_variant", "EMPTY_TEMPLATES", "EVENT_TEMPLATES", "NO_SPIKE_TEMPLATES",
    "NO_TREND_TEMPLATES", "SPIKE_TEMPLATES", "STAT_TEMPLATES", "SUMMARY_TEMPLATES", "TREND_TEMPLATES", "decimals",
    "fmt", "fmt_time", "printed_tolerance", "Trend", "TrendConfig", "downsample", "find_spikes", "find_trends",
    "BEAT_NAMES", "beat_events", "caption", "caption_series", "label_runs", "level_high", "level_low", "level_middle",
    "sleep_periods", "spike_tolerance", "fact_matches", "parse_facts", "score_caption", "ACTIVITY_MIN_SECONDS",
    "load_captioned"
]

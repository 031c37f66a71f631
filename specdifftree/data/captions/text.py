"""The words of a caption: sentence templates (each also read back as a regular expression, for
scoring) and how numbers and times are printed.

    fill(rng, TREND_TEMPLATES, name="hr", tu="minute", start="3", end="9", dir="increasing")
    template_regex(TREND_TEMPLATES[0]).fullmatch(sentence)   # the fields, parsed back
    fmt(72.34, decimals(x)), fmt_time(t, per_unit), printed_tolerance("72.3")   # -> 0.05
"""

from __future__ import annotations

import math
import re
from typing import Optional, Sequence

import numpy as np

NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?"
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

FIELDS = {
    "name": r"(?P<name>[^.,;()]+?)", "Name": r"(?P<name>[^.,;()]+?)",
    "unit": r"(?: \((?P<unit>[^)]*)\))?",
    "mean": f"(?P<mean>{NUMBER})", "max": f"(?P<max>{NUMBER})", "min": f"(?P<min>{NUMBER})", "std": f"(?P<std>{NUMBER})",
    "tu": r"(?P<tu>point|second|minute|hour)", "start": f"(?P<start>{NUMBER})", "end": f"(?P<end>{NUMBER})",
    "t": f"(?P<t>{NUMBER})", "dur": f"(?P<dur>{NUMBER})",
    "a_dir": r"an? (?P<dir>increasing|decreasing)", "A_dir": r"an? (?P<dir>increasing|decreasing)",
    "verb": r"(?P<verb>rises|falls)",
    "label": r"(?P<label>[^.,;()]+?)", "Label": r"(?P<label>[^.,;()]+?)",
    "A_label": r"an? (?P<label>[^.,;()]+?)", "labels": r"(?P<labels>[^;]+?)",
}


def template_regex(template: str) -> re.Pattern:
    """The template as a case-insensitive regular expression with one group per field."""
    out, pos = [], 0
    for m in re.finditer(r"\{(\w+)\}", template):
        out.append(re.escape(template[pos:m.start()]))
        out.append(FIELDS[m.group(1)])
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out), re.IGNORECASE)


def fill(rng: np.random.Generator, templates: Sequence[str], **kw) -> str:
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

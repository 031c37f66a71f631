"""Fact accuracy of a generated caption (the rules are in the package docstring).

    score_caption(text, reference_facts)   # {"low": 0.75, "middle": 0.5, "high": None}
    parse_facts(text)                      # the facts a caption states, read back with the templates
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from specdifftree.data.captions.base import LEVELS, Fact
from specdifftree.data.captions.text import (EVENT_TEMPLATES, NO_SPIKE_TEMPLATES, NO_TREND_TEMPLATES, SPIKE_TEMPLATES,
                                             STAT_TEMPLATES, TREND_TEMPLATES, template_regex)

_PARSERS: list[tuple[str, re.Pattern]] = (
    [("stat", template_regex(t)) for t in STAT_TEMPLATES] + [("trend", template_regex(t)) for t in TREND_TEMPLATES]
    + [("no_trend", template_regex(t)) for t in NO_TREND_TEMPLATES] + [("spike", template_regex(t)) for t in SPIKE_TEMPLATES]
    + [("no_spike", template_regex(t)) for t in NO_SPIKE_TEMPLATES]
    + [("event", template_regex(t)) for ts in EVENT_TEMPLATES.values() for t in ts])


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

"""Rewards on the text of caption and qa contexts (data/tasks.py). They read the context's channels
and the text only, never `Task.truth`.

    caption-consistency  (text tasks) the mean over caption levels of the fact score: facts read back
                         from the text (data/captions' parse_facts) against facts computed from the
                         series; levels 1-2 as `score_caption` scores them (matched / (reference +
                         invented), so missing and invented facts both cost); level 3, where the text
                         states activities, the share of them the series' motion supports
                         (`activity_support` over the stated span); in [0, 1]
    answer-consistency   how far the series' own features support the answer's claim, in [0, 1]
                         (the choice it ends with; on other contexts, the text after "Answer:"):
                         an activity (motion energy and step rhythm of accelerometer channels), a
                         trend direction, spikes, periodicity or where the maximum lies; 0.8 of it
                         for the answer, 0.2 for the claims of the reasoning (1 when it makes none);
                         -1 when the text ends in no choice (no "Answer:")
    format               0 when the text is a whole answer of the task's grammar (within its cap), else -1
"""

from __future__ import annotations

import re
from typing import Optional

import numpy as np

from specdifftree.data.context import Context

ACTIVE = ("walking", "walk", "running", "run", "jogging", "stairs", "climbing", "cycling", "moving")
STILL = ("standing", "stand", "sitting", "sit", "lying", "working at computer", "resting", "still", "sleeping",
         "talking")
UP = ("up", "upward", "upwards", "increasing", "rising", "growing", "uptrend")
DOWN = ("down", "downward", "downwards", "decreasing", "falling", "declining", "downtrend")
FLAT = ("flat", "stable", "constant", "steady", "no trend", "stationary")
NEUTRAL = 0.5  # support of a claim the features say nothing about


def motion(context: Context) -> Optional[tuple[float, bool]]:
    """(motion energy, step rhythm) of accelerometer channels (names with "acceleration" or "acc", or
    three channels at a known rate), else None: the std of the acceleration magnitude about its
    mean, and whether the most active axis has a dominant period of 1.2-3 Hz. Computed once per context."""
    if context.task is None:  # a forecast context: one series, no names or rate
        return None
    memo = context.task.memo
    if "motion" not in memo:
        memo["motion"] = _motion(context)
    return memo["motion"]


def _motion(context: Context) -> Optional[tuple[float, bool]]:
    from specdifftree.data.features import dominant_period
    from specdifftree.data.tasks import channels

    task = context.task
    chans = channels(context)
    named = sum("acc" in n.lower() for n in chans)
    if not (named >= 2 or (len(chans) == 3 and task.fs)):
        return None
    xyz = np.stack([x for n, x in chans.items() if "acc" in n.lower()] if named >= 2 else list(chans.values()), 1)
    energy = float(np.linalg.norm(xyz - xyz.mean(axis=0), axis=1).std())
    period = dominant_period(xyz[:, int(np.argmax(xyz.std(axis=0)))])
    rhythm = bool(task.fs and period and 1.2 <= task.fs / period <= 3.0)
    return energy, rhythm


def activity_support(energy: float, rhythm: bool, claim: str) -> float:
    """How far motion `energy` (ADC counts) and a step `rhythm` support an activity word."""
    active = float(np.clip((energy - 15.0) / 25.0, 0.0, 1.0))
    words = claim.lower()
    if any(re.search(rf"\b{w}\b", words) for w in ACTIVE):
        return active * (0.6 + 0.4 * rhythm)
    if any(re.search(rf"\b{w}\b", words) for w in STILL):
        return 1.0 - active
    return NEUTRAL


def series_support(x: np.ndarray, claim: str) -> Optional[float]:
    """How far one series supports a claim word about its shape (None: the claim names no shape)."""
    from specdifftree.data.features import dominant_period, spike_word, trend_word

    words = claim.lower()
    has = lambda vocab: any(re.search(rf"\b{w}\b", words) for w in vocab)  # noqa: E731
    if "spike" in words:
        shown = spike_word(x)
        said = "none" if re.search(r"\bno\b", words) else "up" if has(UP) else "down" if has(DOWN) else "any"
        return float(said == shown or (said == "any" and shown != "none"))
    if has(UP) or has(DOWN) or has(FLAT):
        shown = trend_word(x)
        return float((shown == "up" and has(UP)) or (shown == "down" and has(DOWN)) or (shown == "flat" and has(FLAT)))
    if re.search(r"\b(periodic|seasonal|cyclic|cycles?)\b", words):
        return float((dominant_period(x) is not None) != bool(re.search(r"\b(no|not|aperiodic)\b", words)))
    thirds = ("beginning", "middle", "end")
    said = [t for t in thirds if re.search(rf"\b{t}\b", words)]
    if len(said) == 1:
        return float(thirds[min(2, 3 * int(np.argmax(x)) // len(x))] == said[0])
    return None


def claim_support(context: Context, claim: str) -> float:
    """Support of one claim (an answer or a sentence) by the context's features, in [0, 1]."""
    m = motion(context)
    if m is not None:
        s = activity_support(*m, claim)
        if s != NEUTRAL:
            return s
    s = series_support(np.asarray(context.series, dtype=np.float64), claim)
    return NEUTRAL if s is None else s


def reasoning_support(context: Context, reasoning: str) -> float:
    """The mean support of the reasoning's sentences that make a claim; 1 when none does."""
    scores = [claim_support(context, s) for s in re.split(r"(?<=[.!?])\s+", reasoning) if s.strip()]
    scores = [s for s in scores if s != NEUTRAL]
    return float(np.mean(scores)) if scores else 1.0


class AnswerConsistencyReward:
    """The answer's claim against the series' features (module docstring); labels are never read."""

    name = "answer-consistency"
    invalid = -1.0
    w_answer = 0.8

    def __call__(self, text: str, context: Context) -> float:
        from specdifftree.data.tasks import parse_answer
        from specdifftree.rewards.base import need_series

        need_series(context, self.name, 4)
        qa = context.task is not None and context.task.name == "qa"
        answer = parse_answer(text, context.task.choices if qa else ())
        if answer is None:
            return self.invalid
        reasoning = str(text).rsplit("Answer:", 1)[0]
        return self.w_answer * claim_support(context, answer) + (1 - self.w_answer) * reasoning_support(context, reasoning)


def caption_score(text: str, context: Context) -> float:
    """The caption-consistency reward of a text context (module docstring)."""
    from specdifftree.data.captions import parse_facts, score_caption
    from specdifftree.data.tasks import reference_facts

    levels = [v for v in score_caption(text, reference_facts(context)).values() if v is not None]
    events = [f for f in parse_facts(text) if f.level == 3]
    if events:
        levels.append(float(np.mean([_event_support(context, f) for f in events])))
    return float(np.mean(levels)) if levels else 0.0


def _event_support(context: Context, fact) -> float:
    """Whether the motion over a stated activity's span supports it (0 or 1; spans out of the window: 0)."""
    from specdifftree.data.context import text_context
    from specdifftree.data.tasks import captioned, channels

    s = captioned(context)
    per = s.time_unit[1]
    a, b = int(round(fact.start * per)), int(round(fact.end * per))
    if not 0 <= a < b <= s.length or b - a < 8:
        return 0.0
    window = text_context({n: x[a:b] for n, x in channels(context).items()}, context.task, context.task.fs)
    return float(claim_support(window, fact.key) >= 0.5)


def text_format(text: str, context: Context) -> float:
    """0 when the text is a whole answer of the task's grammar, else -1."""
    from specdifftree.data.tasks import machine
    from specdifftree.data.text_grammar import accepts

    return 0.0 if accepts(machine(context), str(text)) else -1.0


__all__ = ["AnswerConsistencyReward", "activity_support", "caption_score", "claim_support", "motion",
           "reasoning_support", "series_support", "text_format"]

"""Tasks: what a query asks for. A task fixes the prompt, the answer grammar and the metrics.

    forecast   the next H values, written by the number codec (data/prompts.py's forecast_prompt,
               prior/constraint.py's grammar); a forecast context has `task` None
    caption    sentences about the series, numbers written as captions write them, a length cap
               (data/text_grammar.py's CaptionMachine); metric: fact accuracy per caption level
               against the reference captions (data/captions) of the same window
    qa         a question with choices; optional reasoning, then "Answer: <choice>" (QAMachine);
               metric: accuracy, when the window's label is known

    task = make_task("qa", question="What is the person doing?", choices=["walking", "standing"])
    context = text_context({"x": x, "y": y, "z": z}, task, fs=52.0)           # data/context.py
    context = task_context(task, "har_chest_acc/1.csv", None, context_length=512, end=20000)

A text context holds its channels as `series` (the first) and `covariates` (the others), their names,
units and sampling rate in its Task. What is true of the window (the label, labelled events) is in
`Task.truth`, for metrics only: rewards never read it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from specdifftree.errors import SDTError

TASKS = ("forecast", "caption", "qa")
TEXT_TASKS = ("caption", "qa")
CAPTION_CAP = 240  # characters of a caption (as the curriculum's captions)
REASONING_CAP = 160  # characters of reasoning before "Answer: "
# activity labels of the chest-accelerometer files (data/sources.py ACCEL_LABELS) as the choice words
# they support; mixed labels (2: standing up, walking, stairs) support none
ACCEL_CHOICES = {1: "sitting", 3: "standing", 4: "walking", 5: "stairs", 6: "walking", 7: "standing"}
_ANSWER = re.compile(r"(?:^|[.!?]\s|^\s*)Answer:\s*(.+?)\s*$", re.DOTALL)


@dataclass
class Truth:
    """What is known of the window, for metrics only (never for rewards)."""

    label: Optional[str] = None  # the qa answer (one of the choices)
    events: tuple = ()  # data.captions.Event list, positions in points of the window (level-3 reference)


@dataclass
class Task:
    """A text task and what its prompt, grammar and rewards read about the channels."""

    name: str
    question: Optional[str] = None
    choices: tuple[str, ...] = ()
    variant: str = "middle+low"  # the caption variant asked for (data/captions VARIANTS)
    cap: int = CAPTION_CAP
    reasoning_cap: int = REASONING_CAP
    names: tuple[str, ...] = ()  # channel names, as captions name them
    units: dict = field(default_factory=dict)
    fs: Optional[float] = None  # sampling rate in Hz (None: positions in points)
    truth: Truth = field(default_factory=Truth)
    memo: dict = field(default_factory=dict, repr=False, compare=False)  # what rewards compute once per context

    def describe(self) -> dict:
        """The task as JSON (no truth)."""
        out = {"name": self.name, "channels": list(self.names), "fs": self.fs}
        if self.name == "caption":
            out.update(variant=self.variant, cap=self.cap)
        else:
            out.update(question=self.question, choices=list(self.choices), reasoning_cap=self.reasoning_cap)
        return out


def check_task(task: str, question: Optional[str] = None, choices: Sequence[str] = (),
               horizon: Optional[int] = None, max_chars: Optional[int] = None) -> None:
    """The task options agree (SDTError, one line, otherwise); nothing is read."""
    from specdifftree.data.text_grammar import ALPHABET

    if task not in TASKS:
        raise SDTError(f"unknown --task '{task}': choose from {', '.join(TASKS)}")
    if max_chars is not None and (task == "forecast" or max_chars < 8):
        raise SDTError("--max-chars (at least 8) sets the length of a caption or of a qa reasoning, not of a forecast"
                       if task == "forecast" else "--max-chars must be at least 8")
    if task != "qa" and (question is not None or choices):
        raise SDTError(f"--question and --choices belong to --task qa, not --task {task}")
    if task in TEXT_TASKS and horizon is not None:
        raise SDTError(f"--horizon is for --task forecast; --task {task} writes text")
    if task == "qa":
        if not choices or any(not c.strip() for c in choices):
            raise SDTError("--task qa needs --choices a,b,c (non-empty, comma-separated)")
        if len(set(choices)) != len(choices):
            raise SDTError(f"--choices repeats a choice: {','.join(choices)}")
        bad = [c for c in choices if not set(c) <= set(ALPHABET) or c != c.strip()]
        if bad:
            raise SDTError(f"choice '{bad[0]}' has characters an answer cannot write: use letters, digits, "
                           "spaces and - / ' ( ) %")
        if not (question or "").strip():
            raise SDTError("--task qa needs --question TEXT")


def split_choices(choices) -> tuple[str, ...]:
    """'a,b,c' or ['a', 'b,c'] -> ('a', 'b', 'c'), spaces around each stripped."""
    items = [choices] if isinstance(choices, str) else list(choices or ())
    return tuple(c.strip() for item in items for c in str(item).split(","))


def make_task(name: str, question: Optional[str] = None, choices=(), max_chars: Optional[int] = None,
              **fields) -> Task:
    """A checked Task; max_chars: the caption's cap, or the qa reasoning's (fields: variant, ...)."""
    choices = split_choices(choices) if choices else ()
    check_task(name, question, choices, max_chars=max_chars)
    if max_chars is not None:
        fields["cap" if name == "caption" else "reasoning_cap"] = int(max_chars)
    return Task(name, question, choices, **fields)


def is_text(context) -> bool:
    """Whether the context asks for text (caption, qa) rather than a forecast."""
    return context.task is not None and context.task.name in TEXT_TASKS


def channels(context) -> dict[str, np.ndarray]:
    """{name: [L]} of a text context's channels, in order."""
    xs = [context.series, *context.covariates]
    return dict(zip(context.task.names, xs))


# ------------------------------------------------------------------------------- prompt and grammar


def text_prompt(context) -> str:
    """The prompt of a caption or qa context (data/prompts.py)."""
    from specdifftree.data.captions import ASK
    from specdifftree.data.prompts import caption_prompt, qa_prompt

    task = context.task
    if task.name == "caption":
        return caption_prompt(channels(context), ASK[task.variant], task.fs)
    return qa_prompt(channels(context), task.question, task.choices, task.fs)


def places(context) -> int:
    """Most digits after the point a text context's numbers need: its channels' and its times'."""
    from specdifftree.data.captions import decimals

    return max(2, *[decimals(x) or 0 for x in channels(context).values()])


def machine(context):
    """The character machine of a text context's answers (data/text_grammar.py)."""
    from specdifftree.data.text_grammar import caption_machine, qa_machine

    task = context.task
    if task.name == "caption":
        return caption_machine(task.cap, places(context))
    return qa_machine(task.choices, task.reasoning_cap, places(context))


# ------------------------------------------------------------------------------- reading answers


def captioned(context, with_truth: bool = False):
    """The context's channels as a data.captions.Captioned (events from the truth only when asked)."""
    from specdifftree.data.captions import Captioned

    task = context.task
    events = task.truth.events if with_truth else ()
    return Captioned.build(channels(context), task.units, task.fs, events)


def reference_facts(context, with_truth: bool = False) -> list:
    """The facts of the reference caption of the context's variant, within its cap; level 3 only
    `with_truth` (labelled events are truth; levels 1-2 come from the series alone)."""
    from specdifftree.data.captions import caption_series

    task = context.task
    if with_truth in task.memo:
        return task.memo[with_truth]
    variant = task.variant if task.name == "caption" else "middle+low"
    captions = caption_series(captioned(context, with_truth), seed=0)
    facts = captions.facts(variant, task.cap)
    if with_truth and "high" not in variant:  # labelled events are stated whatever the variant
        facts += [f for s in captions.levels["high"] for f in s.facts]
    task.memo[with_truth] = facts
    return facts


def parse_answer(text: str, choices: Sequence[str] = ()) -> Optional[str]:
    """The choice a qa answer ends with ("... Answer: walking" -> "walking"), case-insensitively, or
    None; without choices, whatever follows the last "Answer:" (lower case), or None."""
    m = _ANSWER.search(str(text).strip())
    said = m.group(1).strip().rstrip(".").strip().lower() if m else None
    if not choices:
        return said or None
    return next((c for c in choices if c.lower() == said), None)


def text_metrics(texts: Sequence[str], context) -> tuple[list[dict], dict]:
    """(per sample: its answer or fact accuracy, the summary over samples): caption: the mean fact
    accuracy per level against the reference captions (level 3 when labelled events are known);
    qa: each choice's share and the accuracy when the label is known."""
    task = context.task
    if task.name == "caption":
        from specdifftree.data.captions import LEVELS, score_caption

        ref = reference_facts(context, with_truth=True)
        per = [{"fact_accuracy": score_caption(t, ref)} for t in texts]
        summary = {}
        for level in LEVELS:
            got = [p["fact_accuracy"][level] for p in per if p["fact_accuracy"][level] is not None]
            summary[f"fact_accuracy_{level}"] = float(np.mean(got)) if got else None
        return per, summary
    answers = [parse_answer(t, task.choices) for t in texts]
    shares = {c: answers.count(c) / max(len(answers), 1) for c in task.choices}
    summary = {"label": task.truth.label, "answered": sum(a is not None for a in answers) / max(len(answers), 1),
               "shares": shares}
    if task.truth.label is not None:
        summary["accuracy"] = float(np.mean([a == task.truth.label for a in answers])) if answers else None
    return [{"answer": a} for a in answers], summary


__all__ = ["ACCEL_CHOICES", "CAPTION_CAP", "REASONING_CAP", "TASKS", "TEXT_TASKS", "Task", "Truth", "captioned",
           "channels", "check_task", "is_text", "machine", "make_task", "parse_answer", "places", "reference_facts",
           "split_choices", "text_metrics", "text_prompt"]

"""Rewards on text (rewards/text.py): caption-consistency on captions, answer-consistency on answers,
format under each task's grammar; closed cases, and that no reward reads the truth."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import specdifftree as sdt
from specdifftree.data.captions import Event
from specdifftree.data.synthetic import ACTIVITIES, accelerometer
from specdifftree.data.tasks import Truth, captioned
from specdifftree.errors import SDTError
from specdifftree.rewards import REWARDS, parse_reward

CHOICES = ",".join(ACTIVITIES)


def _accel(activity: str, label=None):
    xyz = accelerometer(np.random.default_rng(0), 512, 52.0, activity)
    return sdt.context_from_array(xyz[:, 0], covariates=[xyz[:, 1], xyz[:, 2]], task="qa", fs=52.0,
                                  names=[f"{a}-axis acceleration" for a in "xyz"],
                                  question="What is the person doing?", choices=CHOICES, label=label)


def _rising():
    x = np.linspace(0, 10, 96) + np.sin(np.arange(96)) * 0.3
    return x


def _caption_ctx(x):
    return sdt.context_from_array(x, task="caption")


def _reference(ctx) -> str:
    from specdifftree.data.captions import caption_series

    return caption_series(captioned(ctx), seed=0).text(ctx.task.variant, ctx.task.cap)


def test_text_rewards_are_registered_and_compose():
    assert {"caption-consistency", "answer-consistency", "format"} <= set(REWARDS)
    ctx = _accel("walking")
    r = parse_reward("answer-consistency + 0.5*format")
    assert r("Answer: walking", ctx) == pytest.approx(REWARDS["answer-consistency"]()("Answer: walking", ctx))


def test_caption_with_the_right_facts_scores_highest():
    ctx = _caption_ctx(_rising())
    reward = REWARDS["caption-consistency"]()
    right = _reference(ctx)
    first = right.split(". ")[0] + "."  # the statistics only: the trend and spike facts are missing
    invented = right + " A spike is detected for the series at point 40."
    wrong = right.replace("increasing", "decreasing").replace("rises", "falls")
    assert reward(right, ctx) == pytest.approx(1.0)
    assert reward(right, ctx) > reward(first, ctx) > 0
    assert reward(right, ctx) > reward(invented, ctx)
    assert reward(right, ctx) > reward(wrong, ctx)
    assert reward("Nothing to say.", ctx) == 0.0


def test_stated_activity_is_checked_against_motion():
    xyz = accelerometer(np.random.default_rng(1), 520, 52.0, "walking")
    ctx = sdt.context_from_array(xyz[:, 0], covariates=[xyz[:, 1], xyz[:, 2]], task="caption", fs=52.0,
                                 names=[f"{a}-axis acceleration" for a in "xyz"])
    reward = REWARDS["caption-consistency"]()
    base = _reference(ctx)
    assert (reward(base + " Walking was detected between seconds 0 and 9.", ctx)
            > reward(base + " Sitting was detected between seconds 0 and 9.", ctx))


@pytest.mark.parametrize("activity,right,wrong", [("walking", "walking", "sitting"), ("sitting", "sitting", "walking"),
                                                  ("stairs", "stairs", "standing")])
def test_answer_matching_the_motion_scores_higher(activity, right, wrong):
    ctx = _accel(activity)
    reward = REWARDS["answer-consistency"]()
    assert reward(f"Answer: {right}", ctx) > reward(f"Answer: {wrong}", ctx)
    assert reward("No answer here.", ctx) == -1.0


def test_answer_about_a_trend():
    ctx = sdt.context_from_array(_rising(), task="qa", question="What is the trend?", choices="up,down,flat")
    reward = REWARDS["answer-consistency"]()
    assert reward("Answer: up", ctx) > reward("Answer: flat", ctx)
    assert reward("Answer: up", ctx) > reward("Answer: down", ctx)
    # the reasoning's claims count too: a rationale the series contradicts costs
    assert reward("The series is increasing. Answer: up", ctx) > reward("The series is decreasing. Answer: up", ctx)


def test_format_follows_the_task_grammar():
    fmt = REWARDS["format"]()
    qa = _accel("walking")
    assert fmt("It moves a lot. Answer: walking", qa) == 0.0
    assert fmt("It moves a lot. Answer: running", qa) == -1.0
    cap = _caption_ctx(_rising())
    assert fmt(_reference(cap)[:cap.task.cap], cap) in (0.0, -1.0)
    assert fmt("The series rises.", cap) == 0.0 and fmt("The series rises", cap) == -1.0


TEXTS = ["Answer: walking", "It moves. Answer: sitting", "The series averages 2000 with std 5. Answer: standing",
         "Walking was detected between seconds 0 and 9.", "garbage"]


@pytest.mark.parametrize("name", ["caption-consistency", "answer-consistency", "format"])
def test_rewards_never_read_the_truth(name):
    """The same text and series with a different (or no) label and labelled events: the same reward."""
    reward = REWARDS[name]()
    base = _accel("walking", label="walking")
    other = replace(base, task=replace(base.task, truth=Truth("sitting", (Event("sitting", 0, 512),)), memo={}))
    none = replace(base, task=replace(base.task, truth=Truth(), memo={}))
    for text in TEXTS:
        assert reward(text, base) == reward(text, other) == reward(text, none), text


def test_answer_consistency_on_other_contexts():
    """On a caption or forecast context the answer is whatever follows "Answer:"; a series is needed."""
    from specdifftree.data.context import Context

    reward = REWARDS["answer-consistency"]()
    for ctx in (_caption_ctx(_rising()), Context(series=_rising(), horizon=4)):
        assert reward("Answer: up", ctx) > reward("Answer: down", ctx)
        assert reward("1,2,3", ctx) == -1.0
    with pytest.raises(SDTError, match="series"):
        reward("Answer: up", Context())

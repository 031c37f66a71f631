"""Prompt formats shared by pretraining, curriculum stages and search (OpenTSLM structure:
a description line per series with its mean and std, then the task, then the answer + EOS)."""

from __future__ import annotations

import numpy as np

from specdifftree.data.codec import NumberCodec


def forecast_codec(history: np.ndarray) -> NumberCodec:
    """Three-digit integers anchored at the last value (`NumberCodec.anchored`): the last value
    prints as 500 and the history within 100..900 ("480,512,500"), so the answer is written as
    the change from the last value; one token per digit, every typical value four tokens long."""
    return NumberCodec.anchored(history, sep=",")


def stated_mean(x: np.ndarray) -> float:
    """x's mean as a prompt states it: 0.0 where it is the roundoff of a centred series (under 1e-9
    of the series' largest magnitude). That roundoff ("-4.114e-15") has digits that depend on the
    CPU's SIMD path through numpy, so printing it would make the text, and what trains on it,
    differ between machines."""
    x = np.asarray(x, dtype=np.float64)
    mean = float(x.mean())
    return 0.0 if abs(mean) <= 1e-9 * float(np.abs(x).max(initial=0.0)) else mean


def describe(x: np.ndarray, name: str = "The series") -> str:
    """The series' description line. It prints the plain mean, roundoff of a centred series included
    (not `stated_mean`), because the committed backbones' corpora were written with it."""
    x = np.asarray(x, dtype=np.float64)
    return f"{name} has {len(x)} points, mean {x.mean():.4g} and std {x.std():.4g}."


def forecast_prompt(history: np.ndarray, horizon: int, codec: NumberCodec) -> str:
    """The text before the answer: the description, the task, then the history written with the
    codec and its separator, so the answer continues the list (LLMTime style). With fixed-width
    values the value k steps back is then always the same number of tokens back, across the
    history's end too; with a line between history and answer instead,
    copying yesterday's value meant one offset inside the history and another into the answer."""
    return f"{describe(history)} The next {horizon} values continue the list. Values: {codec.encode(history)}{codec.sep}"


def opentslm_forecast_prompt(history: np.ndarray, horizon: int, codec: NumberCodec) -> tuple[str, str]:
    """(pre_prompt, post_prompt) around the series in OpenTSLM-SP's layout, for forecasting: the
    series goes in as patches (with its mean / std line); the history is also written with the
    codec, so the answer's scale is the one the number grammar and the reward read."""
    pre = "You are an expert in time series analysis."
    return pre, f"Values: {codec.encode(history)}\nNext {horizon} values: "


def forecast_answer(values: np.ndarray, codec: NumberCodec) -> str:
    """The answer text (the caller appends EOS)."""
    return codec.encode(values)

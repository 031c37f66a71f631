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


VALUE_CHARS = 1000  # characters of values a text task's prompt writes, all channels together


def values_line(x: np.ndarray, places, points: int) -> str:
    """x [L] as "Values: a,b,..." at most `points` of them (bin means of k points when L > points,
    said in the line), each written as captions write numbers (`fmt` at `places`)."""
    from specdifftree.data.captions import downsample, fmt

    y, k = downsample(np.asarray(x, dtype=np.float64), max(1, points))
    said = "Values" if k == 1 else f"Values (each the mean of {k} points)"
    return f"{said}: " + ",".join(fmt(float(v), places) for v in y)


def series_block(channels: dict, fs=None) -> str:
    """One description and one values line per channel {name: [L]}, the values of all channels
    together within VALUE_CHARS characters; the sampling rate when known."""
    from specdifftree.data.captions import decimals

    points = _points(channels)
    lines = [f"Sampled at {fs:g} Hz." if fs else "Time is counted in points from 0."]
    for name, x in channels.items():
        lines.append(describe(x, name[:1].upper() + name[1:]))
        lines.append(values_line(x, decimals(x), points))
    return "\n".join(lines)


def _points(channels: dict) -> int:
    """Values written per channel: all channels' values together within VALUE_CHARS characters."""
    from specdifftree.data.captions import decimals, fmt

    width = max(len(fmt(float(v), decimals(x))) for x in channels.values() for v in (np.nanmin(x), np.nanmax(x)))
    return max(16, VALUE_CHARS // (len(channels) * (width + 1)))


def caption_prompt(channels: dict, ask: str, fs=None) -> str:
    """The text before a caption. One channel: as the backbones' corpus writes a caption document
    (data/corpus.py): the description and the values by the forecast codec on one line, the ask,
    then "Caption: ". Several: the series block (one description and values line per channel)."""
    if len(channels) == 1:
        x = np.asarray(next(iter(channels.values())), dtype=np.float64)
        return f"{describe(x)} Values: {forecast_codec(x).encode(x)}\n{ask}\nCaption: "
    return f"You are given a time series with {len(channels)} channels.\n{series_block(channels, fs)}\n{ask}\nCaption: "


def qa_prompt(channels: dict, question: str, choices, fs=None) -> str:
    """The text before a question's answer, in the curriculum's layout (data/example.py: the task
    line, one line per channel with its mean and std, the question and options), each channel's
    values after its line; the answer follows directly, reasoning briefly and ending with
    "Answer: <option>" (OpenTSLM's chain-of-thought format)."""
    from specdifftree.data.captions import decimals

    what = "a time series" if len(channels) == 1 else f"a time series with {len(channels)} channels"
    lines = [f"You are given {what} and a multiple-choice question about it."]
    lines += [f"Sampled at {fs:g} Hz."] if fs else []
    points = _points(channels)
    for name, x in channels.items():
        x = np.asarray(x, dtype=np.float64)
        lines.append(f"{name[:1].upper() + name[1:]}, it has mean {stated_mean(x):.4g} and std {x.std():.4g}.")
        lines.append(values_line(x, decimals(x), points))
    lines += [f"Question: {question}", f"Options: {'; '.join(choices)}", "Reason briefly, then answer."]
    return "\n".join(lines)

"""`--reward sensorlm:DIR`: how well a text fits the context's series, by a trained sensorlm model.

    r = SensorLMReward("runs/slm")          # checks DIR now, loads the model at the first call
    r("Answer: walking", context)           # t * cos(series, text) + b: the SigLIP logit
    r.cost()                                # {"sensorlm:runs/slm": {"text_calls", "series_calls", "seconds"}}
    reward_costs(reward)                    # the costs of every term of a (composite) reward that has one

The reward is the model's SigLIP logit, the log-odds that the text describes the series: a
search's target p(x | c) exp(lambda r) is then, at lambda = 1, the prior reweighted by the model's
likelihood ratio of the text. The series are the context's channels (`series`, then `covariates`,
as a caption or question context holds them). An answer to a question (a qa context's text that
ends in "Answer: <choice>") is scored as the caption sentence ANSWER_TEMPLATE with its choice, the
sentence zero-shot classification uses (the towers were trained on captions, not on reasoning);
any other text (a caption, an unfinished answer) is scored as it is. Embeddings are cached: one sensor-tower call per
context, one text-tower call per distinct text. Its cost is counted here, apart from the prior's
forward tokens.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from specdifftree.errors import SDTError

PREFIX = "sensorlm:"
ANSWER_TEMPLATE = "The recording shows {label}."
TEXT_CACHE = 4096


def is_sensorlm_spec(name: str) -> bool:
    return name.startswith(PREFIX)


def context_channels(context) -> np.ndarray:
    """[C, L] channels of a context: its series and covariates (the shorter cut to a common end)."""
    if context is None or getattr(context, "series", None) is None:
        raise SDTError("the sensorlm reward needs a context series (--series)")
    chans = [np.asarray(context.series, dtype=np.float64).ravel()]
    chans += [np.asarray(c, dtype=np.float64).ravel() for c in (getattr(context, "covariates", None) or [])]
    n = min(len(c) for c in chans)
    if n < 1:
        raise SDTError("the sensorlm reward needs a non-empty context series")
    return np.stack([c[len(c) - n:] for c in chans])


class SensorLMReward:
    """fn(text, context) -> t * cos(z_series, z_text) + b of the model in `directory`."""

    def __init__(self, directory: str):
        from specdifftree.sensorlm.checkpoint import check_model_dir

        self.directory = directory
        self.name = f"{PREFIX}{directory}"
        self.manifest = check_model_dir(directory)
        self._model = None
        self._series: tuple = (None, None)  # (key, embedding [E])
        self._texts: OrderedDict = OrderedDict()
        self.text_calls = self.series_calls = 0
        self.seconds = 0.0

    def _loaded(self):
        if self._model is None:
            from specdifftree.sensorlm.checkpoint import load_sensorlm

            t0 = time.perf_counter()
            self._model = load_sensorlm(self.directory)
            self.seconds += time.perf_counter() - t0
        return self._model

    def _series_embedding(self, context) -> np.ndarray:
        from specdifftree.sensorlm.evaluate import embed_series

        x = context_channels(context)
        m = self._loaded()
        if x.shape[0] > m.config.channels:
            raise SDTError(f"{self.name}: the context has {x.shape[0]} channels; the model reads at most "
                           f"{m.config.channels}")
        key = (x.shape, hash(x.tobytes()))
        if self._series[0] != key:
            self._series = (key, embed_series(m, [x])[0])
            self.series_calls += 1
        return self._series[1]

    def _text_embedding(self, text: str) -> np.ndarray:
        from specdifftree.sensorlm.evaluate import embed_texts

        if text in self._texts:
            self._texts.move_to_end(text)
            return self._texts[text]
        z = embed_texts(self._loaded(), [text])[0]
        self.text_calls += 1
        self._texts[text] = z
        if len(self._texts) > TEXT_CACHE:
            self._texts.popitem(last=False)
        return z

    def __call__(self, text: str, context) -> float:
        import torch

        t0 = time.perf_counter()
        with torch.no_grad():
            zs, zt = self._series_embedding(context), self._text_embedding(scored_text(text, context))
            m = self._loaded()
            r = float(m.model.log_scale.exp()) * float(zs @ zt) + float(m.model.bias)
        self.seconds += time.perf_counter() - t0
        return r

    def cost(self) -> dict:
        return {self.name: {"text_calls": self.text_calls, "series_calls": self.series_calls,
                            "seconds": round(self.seconds, 4)}}


def scored_text(text: str, context) -> str:
    """The text the towers score: a qa context's answer as ANSWER_TEMPLATE, else the text itself."""
    task = getattr(context, "task", None)
    if getattr(task, "name", None) == "qa" and getattr(task, "choices", None):
        from specdifftree.data.tasks import parse_answer

        answer = parse_answer(text, task.choices)
        if answer is not None:
            return ANSWER_TEMPLATE.replace("{label}", answer)
    return text


def reward_costs(reward) -> dict:
    """{term name: cost} of every term of `reward` (itself or a composite's `terms`) that counts a cost
    of its own (a `cost()` method), e.g. a sensorlm reward's encoder calls; {} when none does."""
    terms = [fn for _, fn in getattr(reward, "terms", [])] or [reward]
    out: dict = {}
    for fn in terms:
        if callable(getattr(fn, "cost", None)):
            out.update(fn.cost())
    return out


def sensorlm_reward(name: str) -> SensorLMReward:
    """The reward a `sensorlm:DIR` spec names."""
    directory = name[len(PREFIX):]
    if not directory:
        raise SDTError("--reward sensorlm:DIR needs a model directory (sdt sensorlm train --out DIR)")
    return SensorLMReward(str(Path(directory)))

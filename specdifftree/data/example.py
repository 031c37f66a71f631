"""One curriculum example in the OpenTSLM prompt structure: the contract between the stage
datasets (`data/stages.py`) and the trainer (`train/`).

    prompt = pre_prompt
             + one description line per series (its name, mean and std; OpenTSLM style)
             + post_prompt
    target = answer + EOS   (the trainer appends EOS; `answer` never holds it)

The encoder sees the raw `series` (it z-normalises them itself); the frozen LLM sees the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from specdifftree.data.prompts import stated_mean

STAGES = ("stage1_mcq", "stage2_captioning", "stage3_cot", "stage4_sleep_cot", "stage5_ecg_cot",
          "stage6_forecast")


@dataclass
class Example:
    stage: str                       # one of STAGES
    series: list[np.ndarray]         # raw values, one [T_i] float array per series (T_i >= one patch)
    names: list[str]                 # one name per series, e.g. "The accelerometer x-axis"
    pre_prompt: str                  # task framing before the series lines
    post_prompt: str                 # the question / instruction after them
    answer: str                      # gold answer text, without EOS
    label: Optional[str] = None      # class label for accuracy / macro recall (stages 1, 3, 4, 5)
    options: tuple[str, ...] = ()    # the label set where the task is a classification
    meta: dict = field(default_factory=dict)  # source file, row/window index, generator seed, ...
    text: Optional[str] = None       # the exact prompt, when a stage fixes it (stage 6 uses
                                     # data.prompts.forecast_prompt: the prompt `sdt search` sends)

    def prompt(self) -> str:
        """The text before the answer."""
        if self.text is not None:
            return self.text
        lines = [self.pre_prompt]
        for name, x in zip(self.names, self.series):
            x = np.asarray(x, dtype=np.float64)
            lines.append(f"{name}, it has mean {stated_mean(x):.4g} and std {x.std():.4g}.")
        lines.append(self.post_prompt)
        return "\n".join(lines)

"""OpenTSLM's prompt, as upstream builds it, shared by both variants (prior/opentslm.py: the soft
prompt; prior/flamingo.py: cross-attention).

    prompt = UpstreamPrompt(pre, [(series_text(x1), x1), (series_text(x2), x2)], post)
    z = padded_series([x for _, x in prompt.series], patch)   # [n, L*] float32, one encoder batch

Upstream (StanfordBDHG/OpenTSLM) describes each series by its mean and unbiased std computed on a
float32 tensor and printed with 4 decimals; it z-normalises each series ((x - mean) / (std + 1e-8),
float32) and pads all series of one sample with zeros to the longest, rounded up to a multiple of
the patch, and encodes them as one batch: a short series carries the long one's patch count, and
the padded patches are attended. Its loss tokenizes the answer with the tokenizer's special tokens,
so trained models emit those first (Llama, Gemma: BOS); `answer_prefix` gives them, and the priors
prefill them after the prompt so that the search starts where the trained answer starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SERIES_TEXT = "This is the time series, it has mean {mean:.4f} and std {std:.4f}."  # OpenTSLM's TSQA wording
STD_EPS = 1e-8  # upstream divides by std + 1e-8
_PROBE = "0"  # a text whose ids show where a tokenizer puts its special tokens


def series_stats(x) -> tuple[float, float]:
    """(mean, unbiased std) of a series computed in float32 on torch, as upstream computes them
    (its digits differ from float64's at magnitudes of 1e3 and above). std is 0 for one point."""
    import torch

    t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    return float(t.mean()), (float(t.std()) if t.numel() > 1 else 0.0)


def series_text(x, template: str = SERIES_TEXT) -> str:
    """The description of one series: `template` with its float32 mean and std."""
    mean, std = series_stats(x)
    return template.format(mean=mean, std=std)


def normalized(x) -> "object":
    """z = (x - mean) / (unbiased std + 1e-8) in float32, as upstream.  [L] -> torch [L]"""
    import torch

    t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    mean, std = series_stats(x)
    return (t - torch.tensor(mean, dtype=torch.float32)) / (torch.tensor(std, dtype=torch.float32) + STD_EPS)


def padded_series(series: list, patch: int):
    """Every series of one prompt z-normalised and zero-padded to the longest, rounded up to a
    multiple of `patch` (upstream's `extend_time_series_to_match_patch_size_and_aggregate`).
    [n series of L_i] -> torch float32 [n, L*], L* = patch * ceil(max L_i / patch)."""
    import torch

    zs = [normalized(x) for x in series]
    longest = max(len(z) for z in zs)
    out = torch.zeros(len(zs), -(-longest // patch) * patch)
    for i, z in enumerate(zs):
        out[i, : len(z)] = z
    return out


def text_ids(backbone, text: str) -> list[int]:
    """A text segment's ids with the tokenizer's default special tokens (Llama: BOS first), as upstream."""
    return list(backbone.tokenizer(text)["input_ids"])


def answer_prefix(backbone) -> list[int]:
    """The special tokens the tokenizer puts before an answer's own ids (Llama, Gemma: [BOS]; none
    for a tokenizer that adds nothing), which upstream's loss trains the model to emit first."""
    plain = list(backbone.tokenizer(_PROBE, add_special_tokens=False)["input_ids"])
    full = text_ids(backbone, _PROBE)
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start]
    return []


@dataclass
class UpstreamPrompt:
    """pre_prompt, (text, raw series) per series, post_prompt: OpenTSLM's input, before the answer."""

    pre_prompt: str
    series: list[tuple[str, np.ndarray]]
    post_prompt: str

    @classmethod
    def described(cls, pre_prompt: str, series: list, post_prompt: str,
                  template: str = SERIES_TEXT) -> "UpstreamPrompt":
        """Each series described as upstream's TSQA does (float32 mean and unbiased std, 4 decimals)."""
        return cls(pre_prompt, [(series_text(x, template), np.asarray(x, dtype=np.float64)) for x in series],
                   post_prompt)

    @classmethod
    def one_series(cls, pre_prompt: str, series: np.ndarray, post_prompt: str) -> "UpstreamPrompt":
        return cls.described(pre_prompt, [series], post_prompt)

    def raw_series(self) -> list[np.ndarray]:
        return [x for _, x in self.series]

    def text(self) -> str:
        """The prompt as text, each series shown as <series:N points> (for records)."""
        body = [f"{t} <series:{len(x)} points>" for t, x in self.series]
        return "\n".join([self.pre_prompt, *body, self.post_prompt])

"""What the prior learns on top of the encoder: a logit bias, and a soft prompt for transformers backbones.

    bias = LogitBiasHead(width, V)(pool(h, patch_mask))     # [B, width] -> [B, V]
    log p(x_t | x_<t, c) = log_softmax(llm_logits + bias)   # bias computed once per context
    soft = SoftPromptProjector(width, hidden)(h)            # [B, P, width] -> [B, P, hidden]
"""

from __future__ import annotations

import torch
import torch.nn as nn

BIAS_INIT_STD = 0.01


class LogitBiasHead(nn.Module):
    """An additive bias on the frozen LLM's next-token logits.  [B, width] -> [B, V]

    Weights start normal(std 0.01) and the bias at 0, so the bias is near zero and
    training starts from the frozen LLM's own distribution.
    """

    def __init__(self, width: int, vocab_size: int):
        super().__init__()
        self.width, self.vocab_size = int(width), int(vocab_size)
        self.proj = nn.Linear(self.width, self.vocab_size)
        nn.init.normal_(self.proj.weight, std=BIAS_INIT_STD)
        nn.init.zeros_(self.proj.bias)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.proj(c)


class SoftPromptProjector(nn.Module):
    """Patch embeddings into the LLM's embedding space (OpenTSLM-SP).  [B, P, width] -> [B, P, hidden]

    depth 2: LayerNorm -> Linear(width -> hidden) -> GELU -> Linear(hidden -> hidden).
    depth 1: LayerNorm -> Linear(width -> hidden) -> GELU, OpenTSLM's projector (its keys
             `projector.{0,1}.*` are ours `net.{0,1}.*`).
    """

    def __init__(self, width: int, hidden: int, depth: int = 2):
        super().__init__()
        if depth not in (1, 2):
            raise ValueError(f"projector depth must be 1 or 2, got {depth}")
        self.width, self.hidden, self.depth = int(width), int(hidden), int(depth)
        layers = [nn.LayerNorm(self.width), nn.Linear(self.width, self.hidden), nn.GELU()]
        if depth == 2:
            layers.append(nn.Linear(self.hidden, self.hidden))
        self.net = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)

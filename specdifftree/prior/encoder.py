"""The time-series encoder of the prior (OpenTSLM's TransformerCNNEncoder), in one file.

    z, mean, std = normalize(x, mask)        # per series; mean and std go into the prompt text
    h, patch_mask = encoder(z, mask)         # [B, L] -> [B, P, width], [B, P]   with P = ceil(L / patch)
    c = pool(h, patch_mask)                  # [B, width], input of the logit-bias head

A series is cut into non-overlapping patches of `patch` points. Lengths that are not a
multiple of the patch are right-padded with zeros; a patch is valid when any of its points
is valid, and invalid patches are masked out of attention and of the pooled mean, so a
series gives the same output whatever padding it is batched with.

Layer order (as OpenTSLM): Conv1d patch embedding -> + learned position -> LayerNorm ->
dropout -> transformer encoder. By default the transformer is pre-norm (`norm_first=True`)
with a final LayerNorm: pre-norm keeps gradients well scaled through the residual stream when
the stack is trained from scratch (no warm-up tuning needed), and the final LayerNorm
hands the heads a normalised output, as OpenTSLM's post-norm stack does.
`EncoderConfig.upstream()` is OpenTSLM's own layout (post-norm, no final norm), the one its
published checkpoints were trained with; its weights load key for key (`prior/opentslm.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from specdifftree.errors import SDTError

STD_FLOOR = 1e-8  # a constant series has std 0; dividing by the floor instead gives z = 0


@dataclass
class EncoderConfig:
    patch: int = 4  # points per patch (Conv1d kernel = stride)
    width: int = 128  # model width
    layers: int = 6
    heads: int = 8
    ff: int = 1024  # feed-forward width
    max_patches: int = 1024  # longest series: max_patches * patch points
    dropout: float = 0.0
    norm_first: bool = True  # pre-norm layers (False: post-norm, as OpenTSLM)
    final_norm: bool = True  # a LayerNorm after the last layer (OpenTSLM has none)

    @classmethod
    def upstream(cls, **overrides) -> "EncoderConfig":
        """OpenTSLM's encoder layout: post-norm layers and no final LayerNorm."""
        return cls(**{"norm_first": False, "final_norm": False, **overrides})

    @property
    def max_len(self) -> int:
        return self.max_patches * self.patch


def check_batch(x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A float batch `[B, L]` and its bool mask `[B, L]`, or an SDTError saying which series is bad.

    Only valid (mask True) points must be finite: padding may hold anything, NaN included.
    """
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise SDTError(f"the encoder takes a batch of series of shape [B, L], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.float()
    if mask is None:
        mask = torch.ones(x.shape, dtype=torch.bool, device=x.device)
    mask = torch.as_tensor(mask, device=x.device).to(torch.bool)
    if mask.shape != x.shape:
        raise SDTError(f"series mask has shape {tuple(mask.shape)}, the series {tuple(x.shape)}")
    bad = mask & ~torch.isfinite(x)
    if bad.any():
        row, col = (int(i) for i in bad.nonzero()[0])
        raise SDTError(f"series {row} has a non-finite value ({x[row, col].item()}) at index {col}")
    return x, mask


def normalize(x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Z-normalise each series over its valid points.  x, mask: [B, L] -> z [B, L], mean [B], std [B]

    `std` is the population std (ddof 0) floored at STD_FLOOR, so a constant series gives
    z = 0 and `z * std[:, None] + mean[:, None]` recovers x at valid points. Statistics are
    computed in float64 (series with a large offset lose nothing) and returned in x's dtype.
    Padded points of z are 0.
    """
    x, mask = check_batch(x, mask)
    m = mask.to(torch.float64)
    x64 = torch.where(mask, x.to(torch.float64), 0.0)
    n = m.sum(-1).clamp_min(1.0)
    mean = x64.sum(-1) / n
    var = ((x64 - mean[:, None]) ** 2 * m).sum(-1) / n
    std = var.sqrt().clamp_min(STD_FLOOR)
    z = torch.where(mask, (x64 - mean[:, None]) / std[:, None], 0.0)
    return z.to(x.dtype), mean.to(x.dtype), std.to(x.dtype)


def pool(h: torch.Tensor, patch_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the valid patches.  h: [B, P, W], patch_mask: [B, P] bool -> [B, W]"""
    m = patch_mask.to(h.dtype)[..., None]  # [B, P, 1]
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


class TransformerCNNEncoder(nn.Module):
    """Conv1d patches + learned positions + LayerNorm + transformer.  [B, L] -> [B, P, width]"""

    normalize = staticmethod(normalize)
    pool = staticmethod(pool)

    def __init__(self, config: Optional[EncoderConfig] = None):
        super().__init__()
        config = config or EncoderConfig()
        if config.width % config.heads:
            raise SDTError(f"encoder width {config.width} is not divisible by heads {config.heads}")
        self.config = config
        self.patch_embed = nn.Conv1d(1, config.width, kernel_size=config.patch, stride=config.patch, bias=False)
        self.pos_embed = nn.Parameter(torch.empty(config.max_patches, config.width))
        nn.init.normal_(self.pos_embed, std=0.02)
        self.input_norm = nn.LayerNorm(config.width)
        self.input_dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=config.width,
            nhead=config.heads,
            dim_feedforward=config.ff,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=config.norm_first,
        )
        # enable_nested_tensor off keeps padded and unpadded batches on the same kernels.
        self.transformer = nn.TransformerEncoder(
            layer, num_layers=config.layers, norm=nn.LayerNorm(config.width) if config.final_norm else None,
            enable_nested_tensor=False,
        )

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode z-normalised series (see `normalize`).

        x:    [B, L] float; points where `mask` is False are ignored (treated as 0).
        mask: [B, L] bool, True = valid point; None = all valid.
        Returns h [B, P, width] (0 at padded patches) and patch_mask [B, P] bool, P = ceil(L / patch).
        """
        c = self.config
        x, mask = check_batch(x, mask)
        x, mask = x.to(self.pos_embed.device), mask.to(self.pos_embed.device)
        B, L = x.shape
        for row, n in enumerate(mask.sum(-1).tolist()):
            if n < c.patch:
                raise SDTError(f"series {row} has {n} valid points; the encoder needs at least one patch of {c.patch}")
        P = math.ceil(L / c.patch)
        if P > c.max_patches:
            raise SDTError(
                f"series of {L} points is longer than the encoder's limit of {c.max_len} "
                f"({c.max_patches} patches of {c.patch})"
            )

        pad = P * c.patch - L
        x = F.pad(torch.where(mask, x, 0.0), (0, pad)).to(self.pos_embed.dtype)  # [B, P*patch]
        patch_mask = F.pad(mask, (0, pad)).view(B, P, c.patch).any(-1)  # [B, P]

        h = self.patch_embed(x[:, None, :]).transpose(1, 2)  # [B, P, width]
        h = self.input_dropout(self.input_norm(h + self.pos_embed[:P]))
        h = self.transformer(h, src_key_padding_mask=~patch_mask)  # True in the key mask = ignore
        return h * patch_mask[..., None].to(h.dtype), patch_mask

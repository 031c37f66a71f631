"""The two towers and the SigLIP loss (SensorLM's recipe, sized for a CPU).

    cfg = SensorLMConfig(vocab=1024)          # sensorlm/config.py
    model = SensorLM(cfg)
    z_s = model.encode_series(patches, stats, mask)      # [B, E], unit norm
    z_t = model.encode_text(ids, text_mask)              # [B, E], unit norm
    loss = siglip_loss(z_s, z_t, model.log_scale, model.bias)

Sensor tower: a ViT over time x channel patches. A window of C channels and L points is cut into
tokens of `group` channels x `patch` points (per channel z-scored, with each channel's level and
spread as separate features, so that posture - the accelerometer's gravity offsets - is not lost
to the normalisation); learned position and channel-group embeddings, a pre-norm transformer, and
attention pooling by one learned query. Text tower: token and position embeddings, a pre-norm
transformer, the mean over the text's tokens. Each tower ends in a linear projection to `embed`
dimensions and L2 normalisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from specdifftree.sensorlm.config import N_STATS, SensorLMConfig


def _encoder(width: int, heads: int, ff: int, layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(width, heads, ff, dropout=0.0, batch_first=True, norm_first=True,
                                       activation="gelu")
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class SensorEncoder(nn.Module):
    """[B, G, P, group*patch] patches, [B, G, group*N_STATS] stats, [B, G, P] bool mask -> [B, E]."""

    def __init__(self, cfg: SensorLMConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_in = nn.Linear(cfg.group * cfg.patch, cfg.width)
        self.stats_in = nn.Linear(cfg.group * N_STATS, cfg.width)
        self.pos = nn.Parameter(torch.randn(cfg.patches, cfg.width) * 0.02)
        self.chan = nn.Parameter(torch.randn(cfg.groups, cfg.width) * 0.02)
        self.body = _encoder(cfg.width, cfg.heads, cfg.ff, cfg.layers)
        self.query = nn.Parameter(torch.randn(1, 1, cfg.width) * 0.02)
        self.pool = nn.MultiheadAttention(cfg.width, cfg.heads, batch_first=True)
        self.norm = nn.LayerNorm(cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.embed)

    def forward(self, patches: torch.Tensor, stats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, g, p, _ = patches.shape
        h = self.patch_in(patches) + self.stats_in(stats)[:, :, None] + self.pos[None, None, :p] + self.chan[None, :g, None]
        h = h.reshape(b, g * p, -1)
        pad = ~mask.reshape(b, g * p)
        h = self.body(h, src_key_padding_mask=pad)
        pooled, _ = self.pool(self.query.expand(b, -1, -1), h, h, key_padding_mask=pad, need_weights=False)
        return F.normalize(self.proj(self.norm(pooled[:, 0])), dim=-1)


class TextEncoder(nn.Module):
    """[B, T] token ids, [B, T] bool mask -> [B, E]."""

    def __init__(self, cfg: SensorLMConfig):
        super().__init__()
        self.tok = nn.Embedding(cfg.vocab, cfg.text_width)
        self.pos = nn.Parameter(torch.randn(cfg.text_len, cfg.text_width) * 0.02)
        self.body = _encoder(cfg.text_width, cfg.text_heads, cfg.text_ff, cfg.text_layers)
        self.norm = nn.LayerNorm(cfg.text_width)
        self.proj = nn.Linear(cfg.text_width, cfg.embed)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.tok(ids) + self.pos[None, :ids.shape[1]]
        h = self.body(h, src_key_padding_mask=~mask)
        w = mask.to(h.dtype)[..., None]
        mean = (h * w).sum(1) / w.sum(1).clamp_min(1.0)
        return F.normalize(self.proj(self.norm(mean)), dim=-1)


class SensorLM(nn.Module):
    """Both towers, the learned log temperature (log t) and bias b of the SigLIP logits."""

    def __init__(self, cfg: SensorLMConfig):
        super().__init__()
        self.cfg = cfg
        self.sensor = SensorEncoder(cfg)
        self.text = TextEncoder(cfg)
        self.log_scale = nn.Parameter(torch.tensor(math.log(cfg.init_scale)))
        self.bias = nn.Parameter(torch.tensor(float(cfg.init_bias)))

    def encode_series(self, patches: torch.Tensor, stats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.sensor(patches, stats, mask)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.text(ids, mask)

    def logits(self, z_s: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
        """[Bs, Bt] SigLIP logits t * z_s . z_t + b."""
        return self.log_scale.exp() * z_s @ z_t.T + self.bias


def siglip_loss(z_s: torch.Tensor, z_t: torch.Tensor, log_scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """-mean_ij log sigmoid(y_ij (t z_s_i . z_t_j + b)); y = +1 on the diagonal, -1 elsewhere.
    z_s, z_t: [B, E] unit vectors, pair i = (z_s_i, z_t_i)."""
    logits = log_scale.exp() * z_s @ z_t.T + bias
    y = 2.0 * torch.eye(len(z_s), device=z_s.device, dtype=logits.dtype) - 1.0
    return -F.logsigmoid(y * logits).mean()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

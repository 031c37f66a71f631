"""The one token sampler: temperature, top-k and top-p, then an inverse-CDF draw, on rows held on
the host (numpy) or where the model keeps them (torch, any device). Tree expansions and rollouts,
the sampling baselines, SMC, S-ADT and the trees' child selection all draw through `sample`.

A grammar's mask needs nothing here: the prior applies it to its rows (`TSLMPrior`), so masked
tokens have log-prob -inf and are never drawn.

    tokens, values = sample(rows, u)                  # rows [B, V], u [B] uniforms -> [B], [B]
    tokens, _ = sample(rows, u, temperature=0.7, top_p=0.9)

Only the drawn ids and the values at them cross to the host. One uniform per row: the token is
the number of CDF entries <= u * total, so host and device rows draw the same tokens from the
same uniforms.
"""

from __future__ import annotations

import numpy as np

from specdifftree.search.common import logsumexp


def is_numpy(x) -> bool:
    return isinstance(x, np.ndarray)


def to_numpy(x) -> np.ndarray:
    """A host copy of rows (numpy or torch) as float32.  [B, V] -> [B, V]"""
    if is_numpy(x):
        return np.asarray(x, dtype=np.float32)
    return x.detach().float().cpu().numpy()


def is_warped(temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> bool:
    return temperature != 1.0 or top_k != 0 or top_p < 1.0


def warp(logp, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
    """Temperature, top-k and top-p applied to log-probs, renormalised, in float64 (float32 on mps).
    [B, V] -> [B, V], numpy or torch as given. top-p always keeps the most likely token."""
    if not is_numpy(logp):
        return _warp_torch(logp, temperature, top_k, top_p)
    x = np.asarray(logp, dtype=np.float64) / temperature
    if top_k and top_k < x.shape[-1]:
        kth = np.sort(x, axis=-1)[..., -top_k][..., None]
        x = np.where(x >= kth, x, -np.inf)
    x = x - logsumexp(x, axis=-1, keepdims=True)
    if top_p < 1.0:
        order = np.argsort(-x, axis=-1)
        sorted_p = np.exp(np.take_along_axis(x, order, axis=-1))
        keep_sorted = np.cumsum(sorted_p, axis=-1) - sorted_p < top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=-1)
        x = np.where(keep, x, -np.inf)
        x = x - logsumexp(x, axis=-1, keepdims=True)
    return x


def _warp_torch(logp, temperature: float, top_k: int, top_p: float):
    import torch

    x = logp.to(_wide(logp)) / temperature
    if top_k and top_k < x.shape[-1]:
        kth = torch.topk(x, top_k, dim=-1).values[..., -1:]
        x = torch.where(x >= kth, x, -torch.inf)
    x = x - torch.logsumexp(x, dim=-1, keepdim=True)
    if top_p < 1.0:
        sorted_x, order = torch.sort(x, dim=-1, descending=True)
        sorted_p = torch.exp(sorted_x)
        keep_sorted = torch.cumsum(sorted_p, dim=-1) - sorted_p < top_p
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        x = torch.where(keep, x, -torch.inf)
        x = x - torch.logsumexp(x, dim=-1, keepdim=True)
    return x


def _wide(rows):
    import torch

    return torch.float32 if rows.device.type == "mps" else torch.float64  # mps has no float64


def sample(rows, u: np.ndarray, temperature: float = 1.0, top_k: int = 0,
           top_p: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One token per row by inverse CDF at uniforms u, after warping when a warp option is set.

    rows: [B, V] log-probs, or log-weights up to a constant per row (numpy, or torch on any
    device); u: [B] in [0, 1). Returns (tokens [B] int64, the values of `rows` at them [B]
    float64), both on the host.
    """
    B, V = len(u), rows.shape[-1]
    drawn = warp(rows, temperature, top_k, top_p) if is_warped(temperature, top_k, top_p) else rows
    if is_numpy(rows):
        cdf = np.cumsum(np.exp(np.asarray(drawn, dtype=np.float64)), axis=-1)
        target = u * cdf[:, -1]
        if B == 1:  # one row (a tree's child choice, a widening draw): the same count, found by bisection
            i = min(int(np.searchsorted(cdf[0], target[0], side="right")), V - 1)
            return np.array([i], np.int64), np.array([rows[0, i]], np.float64)
        idx = np.minimum((cdf <= target[:, None]).sum(axis=-1), V - 1)
        return idx.astype(np.int64), np.asarray(rows[np.arange(B), idx], dtype=np.float64)
    import torch

    cdf = torch.cumsum(torch.exp(drawn.to(_wide(rows))), dim=-1)
    target = torch.as_tensor(u, dtype=cdf.dtype, device=rows.device) * cdf[:, -1]
    idx = torch.searchsorted(cdf, target[:, None], right=True).clamp_(max=V - 1)
    vals = torch.gather(rows, 1, idx)
    return idx[:, 0].cpu().numpy().astype(np.int64), vals[:, 0].double().cpu().numpy()

"""Prefix-shared ("cascade") attention for `HFBackbone.advance`.

Every row of a forward descends from a root handle (a prefilled prompt) that it shares with the
other rows of that root. Instead of gathering each row's whole path, the prompt's keys and values
are read once per root and scored as one matrix product per root; only each row's own suffix (the
tokens after its prompt) is gathered per row. The two parts merge by their log-sum-exps, which is
attention over the concatenated keys, exactly up to float rounding:

    o_p = softmax(q K_p^T s) V_p,  o_s = softmax(q K_s^T s + mask) V_s      (s = the model's scaling)
    out = o_s + sigmoid(lse_p - lse_s) * (o_p - o_s)

    step.set_cascade(prefix_idx [G, P], prefix_lens [G], row_slot [B], rows_per_group R, suffix idx [B, S+1])
    model(..., attention_mask=suffix mask [B, 1, 1, S+1])   # with config._attn_implementation = CASCADE

For G roots and B rows this reads G*P + B*(S+1) cached positions per layer instead of B*(P+S+1):
with 16 rows per query over a prompt of hundreds or thousands of tokens, a fraction. Used for models
whose layers are all full attention without logit soft-capping; others keep the padded-path gather.
"""

from __future__ import annotations

import torch

CASCADE = "sdt_cascade"  # the attention implementation name registered with transformers


def cascade_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor, scaling: float | None = None, dropout: float = 0.0,
                      **kwargs) -> tuple[torch.Tensor, None]:
    """query [B, Hq, 1, D]; key, value [B, Hkv, S+1, D] (the rows' suffixes, left-padded, from the pool
    cache); attention_mask [B, 1, 1, S+1] additive. The roots' prompt K/V [G, Hkv, P, D] and the
    row -> (group, place) map come from the `PoolStep` registered for the module's config.
    Returns ([B, 1, Hq, D], None) as transformers' attention functions do."""
    step = STEPS[id(module.config)]
    B, Hq, _, D = query.shape
    Hkv = key.shape[1]
    rep = Hq // Hkv
    G, R = step.groups, step.rows_per_group
    scale = scaling if scaling is not None else D ** -0.5
    dtype = query.dtype
    f32 = (lambda t: t.float()) if dtype in (torch.float16, torch.bfloat16) else (lambda t: t)
    q, kp, vp = f32(query[:, :, 0]), f32(step.kp), f32(step.vp)

    qg = q.new_zeros(G * R, Hq, D)
    qg[step.row_slot_t] = q                                                       # rows into their group's places
    qg = qg.view(G, R, Hkv, rep, D).permute(0, 2, 1, 3, 4).reshape(G, Hkv, R * rep, D)
    sp = torch.matmul(qg, kp.transpose(-1, -2)) * scale + step.prefix_mask       # [G, Hkv, R*rep, P]
    lse_p = torch.logsumexp(sp, -1, keepdim=True)
    o_p = torch.matmul(torch.softmax(sp, -1), vp)                                 # [G, Hkv, R*rep, D]

    def to_rows(t: torch.Tensor) -> torch.Tensor:                                 # [G, Hkv, R*rep, X] -> [B, Hkv, rep, X]
        x = t.shape[-1]
        return t.view(G, Hkv, R, rep, x).permute(0, 2, 1, 3, 4).reshape(G * R, Hkv, rep, x)[step.row_slot_t]

    ss = torch.matmul(q.view(B, Hkv, rep, D), f32(key).transpose(-1, -2)) * scale + f32(attention_mask)
    lse_s = torch.logsumexp(ss, -1, keepdim=True)                                 # [B, Hkv, rep, 1]
    o_s = torch.matmul(torch.softmax(ss, -1), f32(value))                         # [B, Hkv, rep, D]
    out = o_s + torch.sigmoid(to_rows(lse_p) - lse_s) * (to_rows(o_p) - o_s)
    return out.reshape(B, 1, Hq, D).to(dtype), None


STEPS: dict = {}  # id(attention modules' config) -> the PoolStep of the backbone advancing it now


def register() -> None:
    """Make CASCADE a transformers attention implementation (idempotent; done on import)."""
    from transformers import AttentionInterface

    AttentionInterface.register(CASCADE, cascade_attention)


register()

__all__ = ["CASCADE", "STEPS", "cascade_attention", "register"]

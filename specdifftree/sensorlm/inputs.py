"""What each tower reads: series windows as patch tensors, texts as token ids.

    batch = series_batch([xyz_window.T, ett_window[None]], cfg)   # SeriesBatch of numpy arrays
    ids, mask = text_batch(tokenizer, ["The person is walking."], cfg.text_len)
    tok = train_tokenizer(captions, vocab=1024)                   # a `tokenizers` BPE

A window is [C, n] (C <= cfg.channels, any n >= 1): it keeps its last min(n, window) points, cut
to a multiple of `patch` (a window shorter than one patch is padded with its last value), each
channel z-scored (NaN filled with the channel's mean); tokens past the window's end and channel
groups it lacks are masked out. Stats per channel: asinh(mean), asinh(std) and
asinh((mean - mean of the channels' means) / mean of their stds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from specdifftree.errors import SDTError
from specdifftree.sensorlm.config import N_STATS, SensorLMConfig

SPECIALS = ("[PAD]", "[UNK]")


@dataclass
class SeriesBatch:
    """patches [B, G, P, group*patch] float32, stats [B, G, group*N_STATS] float32, mask [B, G, P] bool."""

    patches: np.ndarray
    stats: np.ndarray
    mask: np.ndarray

    def __len__(self) -> int:
        return len(self.patches)

    def take(self, idx) -> "SeriesBatch":
        return SeriesBatch(self.patches[idx], self.stats[idx], self.mask[idx])

    def tensors(self, device="cpu"):
        import torch

        return (torch.from_numpy(self.patches).to(device), torch.from_numpy(self.stats).to(device),
                torch.from_numpy(self.mask).to(device))


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x [C, n] with NaN filled by each channel's mean -> (filled x, means [C], stds [C])."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(all="ignore"):
        mean = np.nanmean(x, axis=1)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    x = np.where(np.isfinite(x), x, mean[:, None])
    return x, mean, x.std(axis=1)


def one_window(x: np.ndarray, cfg: SensorLMConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One window [C, n] -> (patches [G, P, group*patch], stats [G, group*N_STATS], mask [G, P])."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    c, n = x.shape
    if c > cfg.channels:
        raise SDTError(f"the series has {c} channels; this sensorlm model reads at most {cfg.channels}")
    if n < 1:
        raise SDTError("the series window is empty")
    x = x[:, -cfg.window:]
    if x.shape[1] < cfg.patch:
        x = np.concatenate([x, np.repeat(x[:, -1:], cfg.patch - x.shape[1], axis=1)], axis=1)
    x = x[:, x.shape[1] % cfg.patch:]
    x, mean, std = channel_stats(x)
    z = (x - mean[:, None]) / np.where(std > 1e-12 * (1 + np.abs(mean)), std, 1.0)[:, None]
    spread = float(std.mean()) + 1e-12 * (1 + float(np.abs(mean).mean()))
    stats = np.arcsinh(np.stack([mean, std, (mean - mean.mean()) / spread], axis=1))  # [C, N_STATS]
    groups, p = cfg.groups, x.shape[1] // cfg.patch
    full = np.zeros((groups * cfg.group, cfg.patches, cfg.patch))
    full[:c, :p] = z.reshape(c, p, cfg.patch)
    st = np.zeros((groups * cfg.group, N_STATS))
    st[:c] = stats
    patches = full.reshape(groups, cfg.group, cfg.patches, cfg.patch).transpose(0, 2, 1, 3)
    mask = np.zeros((groups, cfg.patches), dtype=bool)
    mask[:-(-c // cfg.group), :p] = True
    return patches.reshape(groups, cfg.patches, -1), st.reshape(groups, -1), mask


def series_batch(windows: Sequence[np.ndarray], cfg: SensorLMConfig) -> SeriesBatch:
    """Windows [C_i, n_i] -> one SeriesBatch."""
    parts = [one_window(w, cfg) for w in windows]
    return SeriesBatch(np.stack([p[0] for p in parts]).astype(np.float32),
                       np.stack([p[1] for p in parts]).astype(np.float32), np.stack([p[2] for p in parts]))


def train_tokenizer(texts: Sequence[str], vocab: int = 1024):
    """A byte-pair tokenizer (`tokenizers`) trained on `texts`: lower-cased, split on whitespace,
    punctuation and digits (numbers are read digit by digit), [PAD] = 0, [UNK] = 1."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=list(SPECIALS), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


def load_tokenizer(path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def text_batch(tok, texts: Sequence[str], text_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Texts -> (ids [B, T] int64, mask [B, T] bool), T = the longest text's tokens capped at
    text_len (longer texts keep their first text_len tokens); an empty text is one [UNK]."""
    rows = [(e.ids[:text_len] or [1]) for e in tok.encode_batch(list(texts))]
    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=bool)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = True
    return ids, mask

"""The embedded default backbone's tokenizer: byte-level, no merges, so every digit is its own token.

Token id == byte value for ids 0..255 (bytes written with GPT-2's byte-to-unicode map), then the
special tokens. This is exactly a GPT-2 style BPE with an empty merge list, which llama.cpp's
`gpt2` tokenizer with the `gpt-2` pre-tokenizer reproduces id for id after GGUF export.
"""

from __future__ import annotations

from specdifftree.data.corpus import EOS_TOKEN  # the text that ends each pretraining document

PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = [EOS_TOKEN, PAD_TOKEN]
EOS_ID, PAD_ID = 256, 257  # the special tokens follow the 256 byte tokens
VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)  # 258


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def vocab() -> dict[str, int]:
    """token string -> id: 256 byte tokens (id = byte value), then the special tokens."""
    table = bytes_to_unicode()
    out = {table[b]: b for b in range(256)}
    for i, s in enumerate(SPECIAL_TOKENS):
        out[s] = 256 + i
    return out


def build_tokenizer():
    """A `tokenizers.Tokenizer` (byte-level BPE, no merges) with EOS and PAD as special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    base = {k: v for k, v in vocab().items() if k not in SPECIAL_TOKENS}
    tok = Tokenizer(models.BPE(vocab=base, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok


def build_hf_tokenizer():
    """The same tokenizer as a transformers `PreTrainedTokenizerFast` (save_pretrained -> tokenizer.json)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=build_tokenizer(), eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)

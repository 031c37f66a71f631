"""The ctypes layer under `LlamaCppBackbone`: llama.cpp's library (its logging silenced), a GGUF
model, a context with many sequence ids over one unified KV cache, and the model's vocabulary.

    lib = llama()
    model = load_model(lib, "model.gguf", n_gpu_layers=0)
    ctx = new_context(lib, model, n_ctx=4096, n_batch=512, n_seq_max=64, n_threads=1, kv_type="f32")
    vocab = Vocabulary(lib, model); vocab.tokenize("1, 2"), vocab.detokenize(ids), vocab.token_strings()
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from specdifftree.errors import SDTError

_SILENT_LOG = None  # the no-op log callback; kept referenced so ctypes never frees it
SMALL_MODEL_PARAMS = 100_000_000  # below this, llama.cpp runs on one thread by default


def llama():
    """The llama_cpp module, with llama.cpp's own logging silenced."""
    global _SILENT_LOG
    try:
        import llama_cpp
    except ImportError:
        raise SDTError("gguf: priors run on llama.cpp, which is not installed: pip install 'specdifftree[gguf]'") from None
    if _SILENT_LOG is None:
        _SILENT_LOG = llama_cpp.llama_log_callback(lambda level, text, user: None)
        llama_cpp.llama_log_set(_SILENT_LOG, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
    return llama_cpp


def load_model(lib, path: Path, n_gpu_layers: int = 0):
    """The GGUF model at `path`, `n_gpu_layers` layers offloaded to a GPU (-1: all)."""
    params = lib.llama_model_default_params()
    params.n_gpu_layers = n_gpu_layers if n_gpu_layers >= 0 else 2**31 - 1
    model = lib.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise SDTError(f"llama.cpp cannot load {path}: not a GGUF model it supports")
    return model


def default_threads(lib, model) -> int:
    """1 for small models, else up to 4 cores. ggml synchronises its threads after every op: a
    small model's ops are too short to share, and when another process holds a core every op
    waits for the descheduled thread (measured: 8-row steps of the default backbone take
    ~1 ms on 1 thread, ~0.7 s on 2 threads with one of the 2 cores busy)."""
    small = lib.llama_model_n_params(model) < SMALL_MODEL_PARAMS
    return 1 if small else min(4, os.cpu_count() or 1)


def new_context(lib, model, n_ctx: int, n_batch: int, n_seq_max: int, n_threads: int, kv_type: str):
    """A context with `n_seq_max` sequence ids over one unified KV cache of `n_ctx` cells, `kv_type`
    cells ('f32' or 'f16'), no flash attention; SDTError when llama.cpp cannot create it."""
    p = lib.llama_context_default_params()
    p.n_ctx, p.n_batch, p.n_ubatch, p.n_seq_max = n_ctx, n_batch, n_batch, n_seq_max
    p.n_threads = p.n_threads_batch = n_threads
    p.kv_unified = True
    p.type_k = p.type_v = lib.GGML_TYPE_F32 if kv_type == "f32" else lib.GGML_TYPE_F16
    p.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
    ctx = lib.llama_init_from_model(model, p)
    if not ctx:
        raise SDTError("llama.cpp cannot create the context")
    return ctx


class Vocabulary:
    """A loaded model's vocabulary: size, EOS id, and text to ids and back."""

    def __init__(self, lib, model):
        self.lib = lib
        self.ptr = lib.llama_model_get_vocab(model)
        self.size = lib.llama_vocab_n_tokens(self.ptr)
        self.eos_id = lib.llama_vocab_eos(self.ptr)

    def tokenize(self, text: str) -> list[int]:
        """Ids of `text` with the GGUF vocabulary (no BOS/EOS added; special-token text parsed, as HF does)."""
        raw = text.encode("utf-8")
        cap = len(raw) + 8
        buf = (self.lib.llama_token * cap)()
        n = self.lib.llama_tokenize(self.ptr, raw, len(raw), buf, cap, False, True)
        if n < 0:
            raise SDTError(f"llama.cpp failed to tokenize {text[:40]!r}")
        return list(buf[:n])

    def _piece(self, token: int, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self.lib.llama_token_to_piece(self.ptr, int(token), buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.lib.llama_token_to_piece(self.ptr, int(token), buf, -n, 0, special)
        return buf.raw[:n]

    def detokenize(self, ids: list[int]) -> str:
        """Text of ids; special tokens render as nothing, bad UTF-8 as U+FFFD."""
        return b"".join(self._piece(t, False) for t in ids).decode("utf-8", errors="replace")

    def token_strings(self) -> list[str]:
        """Per id: its text, special tokens by name, a lone non-UTF-8 byte as '<0xAB>'."""
        out = []
        for t in range(self.size):
            raw = self._piece(t, True)
            try:
                out.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                out.append("".join(f"<0x{b:02X}>" for b in raw))
        return out

"""The interface a frozen LLM backbone offers the prior: token ids in, next-token logits out,
with prefixes addressed by integer handles so that branching never recomputes a prefix.

    handle, logits = bb.start(prompt_ids)          # prefill the prompt once: logits [V]
    handle, logits = bb.start(ids, soft_prompt)    # [P, D] embeddings before the ids (transformers only)
    handle, logits = bb.start_segments([ids, emb, ids2])  # ids and [P, D] embeddings interleaved (transformers)
    kids, logits = bb.advance(handles, tokens)     # one new position per row: [B] -> [B], [B, V]
    bb.release(handles)                            # the caller will not advance these again

A handle may be advanced many times (that is how a tree branches). Backends count their work
on `bb.cost` (forward_tokens = positions actually run through the model, model_calls = forward
invocations), including any recomputation they are forced into (e.g. after evicting a prefix).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from specdifftree.errors import SDTError
from specdifftree.prior.base import Cost

DEVICES = "auto|cpu|cuda[:N]|mps"
_DEVICE = re.compile(r"(auto|cpu|mps|cuda)(?::(\d+))?")  # kind, CUDA index
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Placement:
    """Where a backbone runs and in what precision (`--device`, `--dtype`, `--n-gpu-layers`).

    device: "auto" (CUDA when available, else the CPU), "cpu", "cuda", "cuda:N" or "mps".
    dtype:  "auto" (bfloat16 on a CUDA device, float32 elsewhere), "float32", "bfloat16", "float16".
    n_gpu_layers: llama.cpp only, layers offloaded to the GPU (-1: all; "auto" device: all when CUDA).
    """

    device: str = "auto"
    dtype: str = "auto"
    n_gpu_layers: int | None = None

    def validate(self) -> "Placement":
        match = _DEVICE.fullmatch(self.device)
        if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
            raise SDTError(f"--device must be one of {DEVICES}, got '{self.device}'")
        if self.dtype not in DTYPES:
            raise SDTError(f"--dtype must be one of {', '.join(DTYPES)}, got '{self.dtype}'")
        if self.n_gpu_layers is not None and self.n_gpu_layers < -1:
            raise SDTError("--n-gpu-layers must be -1 (all), 0 or a positive number of layers")
        return self

    def torch_device(self):
        """The torch device this placement names; SDTError when it is not available here."""
        import torch

        kind, index = _DEVICE.fullmatch(self.validate().device).groups()
        if kind == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if kind == "cuda":
            if not torch.cuda.is_available():
                raise SDTError("--device cuda: this torch sees no CUDA device; use --device cpu (or auto)")
            if index and int(index) >= torch.cuda.device_count():
                raise SDTError(f"--device {self.device}: only {torch.cuda.device_count()} CUDA device(s) here")
        if kind == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise SDTError("--device mps: MPS is not available here; use --device cpu (or auto)")
        return torch.device(self.device)

    def torch_dtype(self, device=None):
        """The torch dtype for `device` (default: this placement's device)."""
        import torch

        device = self.torch_device() if device is None else device
        if self.dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return getattr(torch, self.dtype)

    def gpu_layers(self) -> int:
        """llama.cpp's n_gpu_layers: as given, else all layers when the device is (or resolves to) CUDA."""
        if self.n_gpu_layers is not None:
            return self.n_gpu_layers
        return -1 if self.torch_device().type == "cuda" else 0

    def describe(self) -> dict:
        device = self.torch_device()
        return {"device": str(device), "dtype": str(self.torch_dtype(device)).removeprefix("torch.")}


def steady_host_memory(threshold: int = 1 << 20) -> bool:
    """Serve host allocations of at least `threshold` bytes with mmap, always (glibc; elsewhere a no-op).

    Each step allocates and frees [B, V] logits and log-probs (B x 600 KB at V = 151,936). glibc's
    default raises its mmap threshold to the size of the largest freed block, after which such
    buffers come from the heap, fragment it and the process's RSS creeps up with every step (measured:
    ~35 KB per tree node at V = 151,936); a fixed threshold returns them to the OS when freed (~3 KB).
    Returns whether the setting took."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, threshold))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


class Backbone(ABC):
    """vocab_size: width of the logits; eos_id: end-of-sequence id; cost: running Cost."""

    vocab_size: int
    eos_id: int
    cost: Cost

    @abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Ids of `text` (no BOS/EOS added)."""

    @abstractmethod
    def detokenize(self, ids: list[int]) -> str:
        """Text of ids (special tokens dropped)."""

    @abstractmethod
    def token_strings(self) -> list[str]:
        """A printable string per id, len == vocab_size (for trees and tables)."""

    @abstractmethod
    def start(self, prompt_ids: list[int], soft_prompt: np.ndarray | None = None) -> tuple[int, np.ndarray]:
        """Prefill the prompt. Returns (handle, logits [V] float32) for the first new token.

        soft_prompt: [P, D] embeddings to place before the prompt's tokens; backends that take
        token ids only raise SDTError."""

    def start_segments(self, segments: list) -> tuple[int, np.ndarray]:
        """Prefill token-id segments ([T_i] lists) and embedding segments ([P_i, D] arrays) in one
        sequence, in order (OpenTSLM-SP's interleaved layout). Token-only backends raise SDTError."""
        raise SDTError(f"{type(self).__name__} takes token ids only; an interleaved soft prompt needs a "
                       "transformers backbone (hf:DIR)")

    @abstractmethod
    def advance(self, handles: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """handles [B], tokens [B] -> (new handles [B], logits [B, V] float32)."""

    def start_logits(self, prompt_ids: list[int], soft_prompt: np.ndarray | None = None):
        """`start` with the logits [V] float32 where the model keeps them: here the host (numpy);
        a torch backbone returns a tensor on its device. Host logits stay numpy: small torch ops
        on the host cost more than the work (thread start-up, and on busy cores thread waits)."""
        return self.start(prompt_ids, soft_prompt)

    def advance_logits(self, handles: np.ndarray, tokens: np.ndarray):
        """`advance` with the logits [B, V] float32 where the model keeps them (see `start_logits`)."""
        return self.advance(handles, tokens)

    def release(self, handles: np.ndarray) -> None:
        """Free the memory of prefixes that will not be advanced again (optional)."""

    def host_kv_bytes(self) -> int:
        """Host bytes of KV storage grown on demand: the model's own keys and values per prefix
        position (its size per position is the model's, not the vocabulary's). 0 where the cache lives
        on a device or is allocated once up front (llama.cpp: n_ctx cells at context creation)."""
        return 0

    def hidden(self, handles: np.ndarray) -> np.ndarray:
        """Last-layer hidden state at each prefix, [B, D] (for flow networks; optional)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose hidden states")

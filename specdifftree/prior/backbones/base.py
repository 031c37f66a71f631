"""The interface a frozen LLM backbone offers the prior: token ids in, next-token logits out,
with prefixes addressed by integer handles so that branching never recomputes a prefix.

    handle, logits = bb.start(prompt_ids)          # prefill the prompt once: logits [V]
    handle, logits = bb.start([ids, emb, ids2])    # ids and [P, D] embeddings interleaved (transformers)
    kids, logits = bb.advance(handles, tokens)     # one new position per row: [B] -> [B], [B, V]
    bb.release(handles)                            # the caller will not advance these again

Logits are float32 and stay where the model keeps them: a torch tensor on the model's device for
transformers, numpy for llama.cpp (whose logits are host memory); `on_host` gives numpy either way.
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
    Returns whether the setting took.

    The setting is process-wide, so no backbone makes it: `sdt` does, once, when a command starts
    (cli/__init__.py); a program that runs long searches through the Python API may call this itself."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, threshold))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def as_segments(segments) -> list:
    """A `start` argument as a list of segments: token ids [T] -> [ids]; a list of segments as it is
    (each a list of ids or an array: 1-D ids, 2-D [P, D] embeddings)."""
    if isinstance(segments, np.ndarray):
        return [segments]
    segments = list(segments)
    if segments and isinstance(segments[0], (int, np.integer)):
        return [segments]
    return segments


def is_embedding(segment) -> bool:
    """Whether a segment holds [P, D] embeddings (else it is token ids)."""
    return np.ndim(segment) == 2


def on_host(logits) -> np.ndarray:
    """Logits or rows where a backbone or prior keeps them -> numpy on the host (numpy as it is, a torch
    tensor copied in its dtype).  [..., V] -> [..., V]"""
    return logits if isinstance(logits, np.ndarray) else logits.detach().cpu().numpy()


class Backbone(ABC):
    """vocab_size: width of the logits; eos_id: end-of-sequence id; cost: running Cost;
    max_positions: the positions the model was trained on (None: no known limit)."""

    vocab_size: int
    eos_id: int
    cost: Cost
    max_positions: int | None = None

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
    def start(self, segments) -> tuple:
        """Prefill a prompt once. Returns (handle, logits [V] float32 for the first new token).

        segments: token ids [T] (a list of ints or a 1-D integer array), or a list of segments
        prefilled in order, each token ids [T_i] or embeddings [P_i, D] (OpenTSLM-SP's layout:
        text, series patches, text, ...; see `as_segments`). Backends that take token ids only
        raise SDTError on an embedding segment."""

    @abstractmethod
    def advance(self, handles: np.ndarray, tokens: np.ndarray) -> tuple:
        """handles [B], tokens [B] -> (new handles [B] int64, logits [B, V] float32), in one forward."""

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

    def weights_sha256(self) -> str:
        """The sha256 of the model's weights files (`files.files_sha256`): what priors on this
        backbone are identified by (`Prior.weights_sha256`)."""
        raise SDTError(f"{type(self).__name__} does not name its weights (weights_sha256)")

"""An analytic Markov-chain prior, small enough to enumerate: the ground truth for exactness tests.

JSON format (`--prior markov:FILE.json`):

    {"vocab": ["a", "b", "c", "<eos>"], "eos": 3, "max_len": 4,
     "initial": [V floats], "transition": [V rows of V floats]}

The first token is drawn from `initial`, each next one from `transition[previous]`.
A sequence ends when EOS is drawn or after `max_len` non-EOS tokens.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from specdifftree.errors import SDTError
from specdifftree.files import file_sha256
from specdifftree.prior.base import Cost, Prior

ROW_TOL = 1e-6


class MarkovPrior(Prior):
    """A handle is simply the last token (the chain's state); the root is -1.

    One `advance` of B rows costs B forward tokens and one call, as a neural prior would;
    `start` costs one token (the implicit BOS).
    """

    def __init__(self, vocab: list[str], eos: int, max_len: int, initial, transition, name: str = "markov"):
        self.vocab = list(vocab)
        self.eos_id = int(eos)
        self.max_len = int(max_len)
        self.name = name
        with np.errstate(divide="ignore"):
            self.log_initial = np.log(np.asarray(initial, dtype=np.float64))
            self.log_transition = np.log(np.asarray(transition, dtype=np.float64))
        self.cost = Cost()
        self.path: Path | None = None  # the JSON file it was read from (`from_json`), if any

    def start(self) -> tuple[int, np.ndarray]:
        self.cost.add(1)
        return -1, self.log_initial.copy()

    def advance(self, handles: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tokens = np.asarray(tokens, dtype=np.int64)
        self.cost.add(len(tokens))
        return tokens.copy(), self.log_transition[tokens]

    def describe(self) -> dict:
        return {"kind": "markov", "name": self.name, "vocab": self.vocab, "eos": self.eos_id, "max_len": self.max_len}

    def features(self, handles: np.ndarray, prefixes: list[list[int]]) -> np.ndarray:
        """The prefix itself, so that a flow network can tell every prefix apart: one-hot of each
        (position, token), one-hot of the last token (the chain's state) and depth / max_len.
        [B, max_len * V + V + 1]; the handles are not needed."""
        V, L = self.vocab_size, self.max_len
        out = np.zeros((len(prefixes), L * V + V + 1), np.float32)
        for i, p in enumerate(prefixes):
            p = np.asarray(p, dtype=np.int64)
            out[i, np.arange(len(p)) * V + p] = 1.0
            if len(p):
                out[i, L * V + p[-1]] = 1.0
            out[i, -1] = len(p) / L
        return out

    def weights_sha256(self) -> str:
        """The sha256 of the JSON file the chain was read from; for a chain built in memory (a built-in
        problem), of its canonical JSON (`to_dict`, keys sorted)."""
        if self.path is not None:
            return file_sha256(self.path)
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    # ---------------------------------------------------------------- loading

    @classmethod
    def from_dict(cls, spec: dict, name: str = "markov") -> "MarkovPrior":
        """Validate a JSON-like dict; every problem is an `SDTError` naming the field."""
        where = f"markov prior {name}"
        if not isinstance(spec, dict):
            raise SDTError(f"{where}: expected a JSON object with vocab, eos, max_len, initial, transition")
        missing = [k for k in ("vocab", "eos", "max_len", "initial", "transition") if k not in spec]
        if missing:
            raise SDTError(f"{where}: missing field(s) {', '.join(missing)}")
        vocab = spec["vocab"]
        if not isinstance(vocab, list) or len(vocab) < 2 or not all(isinstance(v, str) for v in vocab):
            raise SDTError(f"{where}: 'vocab' must be a list of at least 2 strings")
        V = len(vocab)
        eos, max_len = spec["eos"], spec["max_len"]
        if isinstance(eos, bool) or not isinstance(eos, int) or not 0 <= eos < V:
            raise SDTError(f"{where}: 'eos' must be an integer token id in [0, {V - 1}], got {eos!r}")
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
            raise SDTError(f"{where}: 'max_len' must be a positive integer, got {max_len!r}")
        initial = _prob_vector(spec["initial"], V, f"{where}: 'initial'")
        rows = spec["transition"]
        if not isinstance(rows, list) or len(rows) != V:
            raise SDTError(f"{where}: 'transition' must be a list of {V} rows (one per vocab entry)")
        transition = np.stack([_prob_vector(r, V, f"{where}: transition row {i}") for i, r in enumerate(rows)])
        return cls(vocab, eos, max_len, initial, transition, name=name)

    @classmethod
    def from_json(cls, path: str | Path) -> "MarkovPrior":
        path = Path(path)
        if not path.is_file():
            raise SDTError(f"markov prior file not found: {path}")
        try:
            spec = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SDTError(f"markov prior {path}: not valid JSON ({e})") from None
        prior = cls.from_dict(spec, name=str(path))
        prior.path = path
        return prior

    def to_dict(self) -> dict:
        return {
            "vocab": self.vocab,
            "eos": self.eos_id,
            "max_len": self.max_len,
            "initial": np.exp(self.log_initial).tolist(),
            "transition": np.exp(self.log_transition).tolist(),
        }


def _prob_vector(row, V: int, where: str) -> np.ndarray:
    if not isinstance(row, list) or len(row) != V:
        raise SDTError(f"{where} must be a list of {V} numbers")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in row):
        raise SDTError(f"{where} must hold numbers only")
    p = np.asarray(row, dtype=np.float64)
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise SDTError(f"{where} must hold finite, non-negative probabilities")
    if not math.isclose(p.sum(), 1.0, abs_tol=ROW_TOL):
        raise SDTError(f"{where} sums to {p.sum():.6g}, not 1 (rows must be probability vectors)")
    return p

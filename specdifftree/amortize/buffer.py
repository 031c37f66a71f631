"""Search buffers: what finished search trees teach a flow network (S-ADT), one record per context.

A buffer is one safetensors file. Its JSON header (the safetensors metadata key "sdt_buffer")
names the prior (spec and weights sha256), vocabulary size, EOS, reward and lambda, and lists the
records; record i holds the L trajectories of one finished tree (root to each visited terminal
leaf), padded to the longest, T steps:

    r{i}.actions    [L, T]   int64    tokens taken (EOS included when the sequence ended with it), -1 after
    r{i}.logp       [L, T]   float64  log p(a_t | s_t) under the prior, 0 after the end
    r{i}.values     [L, T+1] float64  the tree's soft value at each prefix s_0 (root) .. s_len (= reward), NaN after
    r{i}.visits     [L, T+1] int64    the tree's visit count of each prefix, 0 after
    r{i}.reward     [L]      float64  r(x)
    r{i}.tree_logq  [L]      float64  log-probability of the trajectory under the tree's DTS re-descent

    save_search(path, problem, result, prior="markov:toy3", rewards=[], lam=1.0, cfg=cfg)
    header, records = read_buffer(path)
    context = records[0].query()          # the Context the tree was searched for

A record's context is the history itself (JSON floats round-trip exactly) with the horizon; the
number codec is rebuilt from the history, as every forecasting entry point builds it.

Appending rewrites the file under a lock (`.FILE.lock` beside it) and moves it into place with
os.replace, so readers see the old or the new buffer, never half of one, and concurrent
`--save-buffer` runs accumulate. A record from another prior, vocabulary, reward or lambda is refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

import numpy as np

from specdifftree.errors import SDTError

FORMAT = "sdt-buffer-1"
_META = "sdt_buffer"
_ARRAYS = {"actions": np.int64, "logp": np.float64, "values": np.float64, "visits": np.int64,
           "reward": np.float64, "tree_logq": np.float64}


@dataclass
class BufferHeader:
    """What every record of a buffer must share. `prior` is the spec as given (informative);
    `prior_weights_sha256` (`Prior.weights_sha256`) decides whether two priors are the same, and
    the rewards are compared in `reward_spec`'s normal form."""

    prior: str
    prior_weights_sha256: str
    vocab_size: int
    eos_id: int
    reward: list[str]
    lam: float
    format: str = FORMAT

    def mismatch(self, other: "BufferHeader") -> Optional[str]:
        """What differs between `other` and this header, as "what: other's vs this one's", or None."""
        from specdifftree.rewards import reward_spec

        if other.vocab_size != self.vocab_size or other.eos_id != self.eos_id:
            return f"vocabulary: {other.vocab_size} tokens (EOS {other.eos_id}) vs {self.vocab_size} (EOS {self.eos_id})"
        if other.prior_weights_sha256 != self.prior_weights_sha256:
            return (f"prior: '{other.prior}' (weights sha256 {other.prior_weights_sha256[:16]}...) vs '{self.prior}' "
                    f"({self.prior_weights_sha256[:16]}...)")
        if reward_spec(other.reward) != reward_spec(self.reward):
            return f"reward: {other.reward or '(built-in)'} vs {self.reward or '(built-in)'}"
        if not np.isclose(other.lam, self.lam, rtol=1e-12, atol=0):
            return f"lambda: {other.lam} vs {self.lam}"
        return None


@dataclass
class Record:
    """One context's trajectories (shapes in the module docstring) and where they came from."""

    context: dict  # {"series": [L] floats or None, "horizon": H or None, "meta": {...}} (see `context_record`)
    actions: np.ndarray
    logp: np.ndarray
    values: np.ndarray
    visits: np.ndarray
    reward: np.ndarray
    tree_logq: np.ndarray
    meta: dict = field(default_factory=dict)  # method, seed, iterations, search (config), mean_reward, forward_tokens, ...

    @property
    def lengths(self) -> np.ndarray:
        """[L] steps of each trajectory."""
        return (self.actions >= 0).sum(axis=1)

    def __len__(self) -> int:
        return len(self.reward)

    def query(self):
        """The search context (rewards.base.Context) this record's tree was grown for."""
        from specdifftree.data.context import Context

        series = self.context.get("series")
        if series is None:
            return Context(horizon=self.context.get("horizon"), meta=dict(self.context.get("meta", {})))
        from specdifftree.data.prompts import forecast_codec

        x = np.asarray(series, np.float64)
        if self.context.get("task") is not None:  # a caption or qa context (data/tasks.py): no codec, no horizon
            return Context(series=x, meta=dict(self.context.get("meta", {})), task=_task(self.context["task"]),
                           covariates=[np.asarray(c, np.float64) for c in self.context.get("covariates", [])])
        return Context(series=x, horizon=self.context.get("horizon"), codec=forecast_codec(x),
                       meta=dict(self.context.get("meta", {})),
                       covariates=[np.asarray(c, np.float64) for c in self.context.get("covariates", [])])


def context_record(context) -> dict:
    """What a buffer keeps of a Context: the history, the horizon, the metadata and any covariate
    series (not the target)."""
    series = None if context.series is None else [float(v) for v in np.asarray(context.series).ravel()]
    record = {"series": series, "horizon": context.horizon, "meta": json.loads(json.dumps(context.meta, default=_plain))}
    if context.covariates:
        record["covariates"] = [[float(v) for v in np.asarray(c).ravel()] for c in context.covariates]
    if getattr(context, "task", None) is not None:  # a text task, without its truth (that is for metrics only)
        record["task"] = {f.name: getattr(context.task, f.name) for f in fields(context.task) if f.name not in NOT_KEPT}
        record["task"] = json.loads(json.dumps(record["task"], default=_plain))
    return record


NOT_KEPT = ("truth", "memo")  # Task fields a buffer does not keep


def _task(record: dict):
    """The data.tasks.Task of a text context's record."""
    from specdifftree.data.tasks import Task

    return Task(**{k: tuple(v) if isinstance(v, list) else v for k, v in record.items()})


def search_record(cfg) -> dict:
    """The SearchConfig a record was searched with, as its JSON metadata holds it."""
    return json.loads(json.dumps(asdict(cfg), default=_plain))


def header_for(problem, prior: str, rewards: list[str], lam: float) -> BufferHeader:
    p = problem.prior
    return BufferHeader(prior=prior, prior_weights_sha256=p.weights_sha256(), vocab_size=p.vocab_size, eos_id=p.eos_id,
                        reward=list(rewards), lam=float(lam))


def record_from_tree(tree, lam: float, context: dict, meta: dict) -> Record:
    """The visited terminal leaves of a finished tree as padded trajectories (see the module docstring)."""
    from specdifftree.search.dts import leaf_log_probs

    leaves, log_q = leaf_log_probs(tree, lam, "prior")
    paths = []
    for leaf in leaves.tolist():
        path = [leaf]
        while path[-1] > 0:
            path.append(int(tree.parent[path[-1]]))
        paths.append(np.array(path[::-1]))  # root .. leaf
    L, T = len(paths), max((len(p) - 1 for p in paths), default=0)
    out = {"actions": np.full((L, T), -1), "logp": np.zeros((L, T)), "values": np.full((L, T + 1), np.nan),
           "visits": np.zeros((L, T + 1), np.int64)}
    for i, path in enumerate(paths):
        n = len(path) - 1
        out["actions"][i, :n] = tree.token[path[1:]]
        out["logp"][i, :n] = tree.logp[path[1:]]
        out["values"][i, : n + 1] = tree.value[path]
        out["visits"][i, : n + 1] = tree.visits[path]
    return Record(context=dict(context), reward=tree.reward[leaves].astype(np.float64),
                  tree_logq=np.asarray(log_q, np.float64), meta=dict(meta), **out)


def save_search(path: str | os.PathLike, problem, result, *, prior: str, rewards: list[str], lam: float,
                cfg) -> Record:
    """Append the finished tree of one search on `problem` (`sdt search --save-buffer FILE`) to the
    buffer at `path`."""
    from specdifftree.search.registry import get_method, methods_where

    if result.tree is None or not get_method(result.method).soft_values:
        raise SDTError(f"--save-buffer needs a tree method with soft values ({', '.join(methods_where(soft_values=True))}), "
                       f"not '{result.method}'")
    meta = {"method": result.method, "seed": cfg.seed, "iterations": cfg.iterations, "search": search_record(cfg),
            "mean_reward": sum(s.reward for s in result.samples) / max(len(result.samples), 1), **result.stats()}
    record = record_from_tree(result.tree, lam, context_record(problem.context), meta)
    append_record(path, header_for(problem, prior, rewards, lam), record)
    return record


# ------------------------------------------------------------------------------------ reading / writing


def read_buffer(path: str | os.PathLike) -> tuple[BufferHeader, list[Record]]:
    """(header, records) of a buffer file, or SDTError naming what is wrong with it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = Path(path)
    if not path.is_file():
        raise SDTError(f"search buffer not found: {path} (write one with `sdt search ... --save-buffer {path}`)")
    blob = path.read_bytes()
    try:
        tensors = load(blob)
        meta = json.loads(_metadata(blob)[_META])
        if "fingerprint" in meta["header"]:
            raise SDTError(f"{path} names its prior by the fingerprint older versions used, not by its weights' "
                           f"sha256; collect it again (`sdt search ... --save-buffer {path}`)")
        header = BufferHeader(**meta["header"])
        records = [Record(context=r["context"], meta=r["meta"],
                          **{k: tensors[f"r{i}.{k}"].astype(t, copy=False) for k, t in _ARRAYS.items()})
                   for i, r in enumerate(meta["records"])]
    except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise SDTError(f"{path} is not a readable search buffer ({type(e).__name__}: {str(e)[:80]})") from None
    if header.format != FORMAT:
        raise SDTError(f"{path}: buffer format {header.format!r}, this specdifftree reads {FORMAT!r}")
    return header, records


def _metadata(blob: bytes) -> dict:
    """The safetensors header's __metadata__ (the first 8 bytes give the JSON header's length)."""
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8: 8 + n].decode("utf-8"))["__metadata__"]


def append_record(path: str | os.PathLike, header: BufferHeader, record: Record) -> None:
    """Add `record` to the buffer at `path` (created if missing), atomically, under a lock."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            records = []
            if path.exists():
                old, records = read_buffer(path)
                why = old.mismatch(header)
                if why:
                    raise SDTError(f"cannot append to {path}: different {why} (this search vs the buffer); "
                                   "use another buffer file")
                header = old
            _write(path, header, records + [record])
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write(path: Path, header: BufferHeader, records: list[Record]) -> None:
    from safetensors.numpy import save

    from specdifftree.files import write_atomic

    tensors = {f"r{i}.{k}": np.ascontiguousarray(getattr(r, k), dtype=t)
               for i, r in enumerate(records) for k, t in _ARRAYS.items()}
    meta = {"header": asdict(header), "records": [{"context": r.context, "meta": r.meta} for r in records]}
    write_atomic(path, save(tensors, metadata={_META: json.dumps(meta, default=_plain)}))


def _plain(o):
    """numpy scalars and paths in record metadata, as JSON."""
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"buffer metadata value of type {type(o).__name__} is not JSON-serialisable")

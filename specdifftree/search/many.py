"""Many queries at once: independent searches advanced in lockstep, each round's rows in one forward.

    results = run_many(problems, "dts", [cfg] * len(problems))      # one SearchResult per problem
    lock = Lockstep(max_rows=256); outs = lock.run(problems, fn)    # any fn(i, problem) -> T

Every query runs its method's own code (`registry.run_search`, the functions a single query runs) as
a coroutine: a thread that runs only while the scheduler hands it the turn, so exactly one query runs
at a time and everything happens in a fixed order. When a query's prior asks for next-token rows
(`advance`), the query pauses with its request. Once every active query has paused or finished, the
round is served: the rows of all queries whose priors share a backbone (`TSLMPrior`s on one
`Backbone`) are concatenated in query order into one `Backbone.advance` (chunks of at most
`max_rows` rows) and each query gets its own slice of handles and logits back; its prior then adds
its own bias and grammar mask. A prior that is not a plain `TSLMPrior` (a Markov chain, or
OpenTSLM-Flamingo, which sets per-context media around its forward) serves its own request, one
call per query. Then each query resumes in turn until its next request.

Per query stay: the prior (prompt, bias, grammar states), the tree or particles, the random stream
(seeded by the query's `cfg.seed`) and the cost meter, so a query's result is the one it gets alone:
exactly for priors that serve their own rows, and up to floating-point rounding of a larger batch
for shared backbones. A prompt is prefilled when its query starts (one call per query); prompts of
different lengths then share every later forward through the backbone's slot pool (transformers) or
sequence ids (llama.cpp).

Cost: a query's meter is charged its own rows, and one model call for each forward its rows took part
in, so `forward_tokens` (and with it `--budget`) counts what the query alone would. On llama.cpp,
positions re-decoded after an eviction (which depends on what else holds the KV cells) are shared among
the forward's queries in proportion to their rows. `Lockstep.stats` gives the batch's own totals
(forwards actually run, rows, rounds). A query's `wall_s` is its time from start to finish, waits
for the others included.
"""

from __future__ import annotations

import copy
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence, TypeVar

import numpy as np

from specdifftree.prior.base import Cost, Prior
from specdifftree.search.common import Problem, SearchConfig, SearchResult

T = TypeVar("T")
CPU_MAX_ROWS, DEVICE_MAX_ROWS = 256, 2048  # rows per forward by default: on the host, on a GPU


@dataclass
class ManyStats:
    """What a lockstep run did as a whole: queries, rounds served, backbone forwards actually run
    (shared ones once), rows served, the row cap and wall seconds."""

    queries: int = 0
    rounds: int = 0
    forwards: int = 0
    rows: int = 0
    max_rows: int = 0
    wall_s: float = 0.0


@dataclass
class _Rows:
    """One query's request: `target.advance(handles [B], tokens [B])`. meter: the query's view of a
    shared backbone (charged by the scheduler), or None when the target is the query's own prior."""

    target: object
    handles: np.ndarray
    tokens: np.ndarray
    meter: Optional[Cost] = None


class _Cancelled(BaseException):
    """Raised in a paused query when another query failed: it unwinds without running on."""


class _Turn:
    """A query's coroutine: its thread runs only between `step` (scheduler side) and its next `pause`."""

    def __init__(self, fn: Callable[[], object], modes: Callable[[], object]):
        self.fn, self.modes = fn, modes
        self.go, self.paused = threading.Event(), threading.Event()
        self.request: Optional[_Rows] = None
        self.reply = None
        self.result, self.error, self.done, self.cancelled = None, None, False, False
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        self.go.wait()
        self.go.clear()
        try:
            with self.modes():
                self.result = self.fn()
        except _Cancelled:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the scheduler, which raises it
            self.error = e
        finally:
            self.done = True
            self.paused.set()

    def step(self) -> None:
        """Run the query until it pauses with a request or finishes (scheduler side)."""
        self.paused.clear()
        if not self.thread.is_alive() and not self.done:
            self.thread.start()
        self.go.set()
        self.paused.wait()

    def pause(self, request: _Rows):
        """Hand `request` to the scheduler and wait for its reply (query side)."""
        self.request, self.reply = request, None
        self.paused.set()
        self.go.wait()
        self.go.clear()
        if self.cancelled:
            raise _Cancelled()
        return self.reply


class _SharedBackbone:
    """A query's view of a shared backbone: `advance` pauses the query until the round's fused
    forward; `start`, `release` and the rest are the backbone's, their cost charged to `cost`."""

    def __init__(self, backbone, turn: _Turn):
        self._backbone, self._turn, self.cost = backbone, turn, Cost()

    def __getattr__(self, name):
        return getattr(self._backbone, name)

    def advance(self, handles, tokens):
        return self._turn.pause(_Rows(self._backbone, np.asarray(handles), np.asarray(tokens), self.cost))

    def start(self, segments):
        return self._charged(self._backbone.start, segments)

    def release(self, handles) -> None:
        self._charged(self._backbone.release, handles)

    def _charged(self, fn, *args):
        c = self._backbone.cost
        before = (c.forward_tokens, c.model_calls)
        try:
            return fn(*args)
        finally:
            self.cost.add(c.forward_tokens - before[0], c.model_calls - before[1])


def shares_backbone(prior: Prior) -> bool:
    """Whether the prior's rows can join other priors' in one backbone forward: a plain `TSLMPrior`
    (its forward depends on the handles alone; its bias and grammar are applied after)."""
    from specdifftree.prior.model import TSLMPrior

    return isinstance(prior, TSLMPrior) and type(prior).advance is TSLMPrior.advance \
        and type(prior).start is TSLMPrior.start


def paused_prior(prior: Prior, turn: _Turn) -> Prior:
    """The query's prior as its search sees it: the same prior (meter, states and caches shared), whose
    `advance` pauses the query until the scheduler serves the round."""
    view = copy.copy(prior)
    if shares_backbone(prior):
        view.backbone = _SharedBackbone(prior.backbone, turn)
    else:
        view.advance = lambda handles, tokens: turn.pause(_Rows(prior, np.asarray(handles), np.asarray(tokens)))
    return view


def default_max_rows(prior: Prior) -> int:
    """Rows per forward when none is given: CPU_MAX_ROWS on the host, DEVICE_MAX_ROWS on a GPU."""
    device = getattr(getattr(prior, "backbone", None), "device", None)
    return CPU_MAX_ROWS if device is None or getattr(device, "type", "cpu") == "cpu" else DEVICE_MAX_ROWS


def default_max_active(prior: Prior) -> Optional[int]:
    """Queries alive at once when none is given: on llama.cpp as many as half the context's KV cells
    hold prompts and answers for (every query's prefixes share one context), at least one; else all
    (None)."""
    n_ctx = getattr(getattr(prior, "backbone", None), "n_ctx", None)
    if n_ctx is None or not hasattr(prior, "prompt_ids"):
        return None
    return max(1, (n_ctx // 2) // (len(prior.prompt_ids) + prior.max_len))


class Lockstep:
    """Runs `fn(i, problem)` for many problems in lockstep (module docstring). max_rows: rows per forward
    (None: `default_max_rows` of the first prior); max_active: queries alive at once (None:
    `default_max_active`; a finished query's place goes to the next one)."""

    def __init__(self, max_rows: Optional[int] = None, max_active: Optional[int] = None):
        self.max_rows, self.max_active = max_rows, max_active
        self.stats = ManyStats()

    def run(self, problems: Sequence[Problem], fn: Callable[[int, Problem], T], progress=None) -> list[T]:
        """[fn(i, problem) for i, problem in enumerate(problems)], run in lockstep (fn sees the problem
        with its paused prior); the first error is raised after the
        other queries are unwound. progress(1) after each query finishes."""
        t0 = time.perf_counter()
        rows = self.max_rows or (default_max_rows(problems[0].prior) if problems else CPU_MAX_ROWS)
        self.stats = ManyStats(queries=len(problems), max_rows=rows)
        turns = []
        for i, p in enumerate(problems):
            turn = _Turn(None, _grad_modes())
            turn.fn = (lambda i, q: lambda: fn(i, q))(i, replace(p, prior=paused_prior(p.prior, turn)))
            turns.append(turn)
        waiting, active = deque(turns), []
        limit = self.max_active or (default_max_active(problems[0].prior) if problems else None) or len(turns)
        try:
            while waiting or active:
                while waiting and len(active) < limit:
                    active.append(waiting.popleft())
                    active[-1].step()
                active = self._finished(active, progress)
                if active:
                    self._serve(active, rows)
                    for turn in active:
                        turn.step()
                    active = self._finished(active, progress)
        except BaseException:
            for turn in turns:
                if turn.thread.is_alive() and not turn.done:
                    turn.cancelled = True
                    turn.step()
            raise
        self.stats.wall_s = time.perf_counter() - t0
        return [turn.result for turn in turns]

    @staticmethod
    def _finished(active: list[_Turn], progress) -> list[_Turn]:
        """The turns still running; the first error of a finished one is raised."""
        for turn in active:
            if turn.done and turn.error is not None:
                raise turn.error
            if turn.done and progress is not None:
                progress(1)
        return [turn for turn in active if not turn.done]

    def _serve(self, turns: list[_Turn], max_rows: int) -> None:
        """One round: every request answered, requests on the same target fused, in query order."""
        self.stats.rounds += 1
        groups: dict[int, list[_Turn]] = {}
        for turn in turns:
            groups.setdefault(id(turn.request.target), []).append(turn)
        for members in groups.values():
            requests = [t.request for t in members]
            if requests[0].meter is None:  # a prior serving its own rows, as it would alone
                for turn, r in zip(members, requests):
                    turn.reply = r.target.advance(r.handles, r.tokens)
                    self.stats.forwards += 1
                    self.stats.rows += len(r.handles)
                continue
            for turn, reply in zip(members, self._fused(requests, max_rows)):
                turn.reply = reply

    def _fused(self, requests: list[_Rows], max_rows: int) -> list[tuple]:
        """The requests' rows through their shared backbone in chunks of `max_rows`; each meter charged
        its rows, its share of re-decoded positions and one call: the call its request is alone, even
        where `max_rows` splits the batch (the batch's own forwards are in `stats.forwards`)."""
        backbone = requests[0].target
        sizes = np.array([len(r.handles) for r in requests])
        edges = np.concatenate([[0], np.cumsum(sizes)])
        n = int(edges[-1])
        handles = np.concatenate([r.handles for r in requests]).astype(np.int64)
        tokens = np.concatenate([r.tokens for r in requests]).astype(np.int64)
        before = backbone.cost.forward_tokens
        kids, logits, chunks = [], [], list(range(0, n, max_rows)) or [0]
        for lo in chunks:
            k, lg = backbone.advance(handles[lo:lo + max_rows], tokens[lo:lo + max_rows])
            kids.append(np.asarray(k))
            logits.append(lg)
        self.stats.forwards += len(chunks)
        self.stats.rows += n
        kids_all, logits_all = np.concatenate(kids), _concat(logits)
        extra = _shares(backbone.cost.forward_tokens - before - n, sizes)
        replies = []
        for i, r in enumerate(requests):
            a, b = int(edges[i]), int(edges[i + 1])
            r.meter.add(sizes[i] + extra[i], 1)
            replies.append((kids_all[a:b], logits_all[a:b]))
        return replies


def _concat(parts: list):
    """Logit chunks [B_i, V] (numpy, or torch on a device) -> [sum B_i, V]."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    import torch

    return torch.cat(parts)


def _shares(total: int, sizes: np.ndarray) -> np.ndarray:
    """`total` >= 0 split in proportion to `sizes` [K] in whole units (largest remainders, ties to the
    first): the re-decoded positions of a shared forward."""
    if total <= 0 or sizes.sum() == 0:
        return np.zeros(len(sizes), np.int64)
    exact = total * sizes / sizes.sum()
    out = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - out), kind="stable")
    out[order[: total - int(out.sum())]] += 1
    return out


def _grad_modes():
    """A context manager factory that gives a query's thread the caller's torch grad and inference
    modes (they are per thread); a no-op when torch is not loaded."""
    import contextlib

    torch = sys.modules.get("torch")
    if torch is None:
        return contextlib.nullcontext
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    @contextlib.contextmanager
    def modes():
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            yield

    return modes


def run_many(problems: Sequence[Problem], method: str, cfgs: SearchConfig | Sequence[SearchConfig],
             max_rows: Optional[int] = None, max_active: Optional[int] = None, progress=None,
             stats: Optional[ManyStats] = None) -> list[SearchResult]:
    """`run_search(problem, method, cfg)` for every problem (cfgs: one config for all, or one per
    problem), in lockstep: each result is the one its query gets alone with the same config and seed.
    stats: filled with the batch's totals (`ManyStats`)."""
    from specdifftree.search.registry import run_search

    cfgs = [cfgs] * len(problems) if isinstance(cfgs, SearchConfig) else list(cfgs)
    lock = Lockstep(max_rows, max_active)
    results = lock.run(problems, lambda i, q: run_search(q, method, cfgs[i]), progress)
    if stats is not None:
        for key, value in vars(lock.stats).items():
            setattr(stats, key, value)
    return results


__all__ = ["Lockstep", "ManyStats", "default_max_active", "default_max_rows", "paused_prior", "run_many",
           "shares_backbone"]

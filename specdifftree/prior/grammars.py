"""Token masks for the text tasks' grammars (caption, qa), for any vocabulary (byte level or BPE).

`TextGrammar` has the protocol the prior applies to its rows (as `ForecastGrammar` in
prior/constraint.py): `start`, `step(state, token)`, `mask(state)` [V] additive (0 or -inf),
`max_tokens()`, plus `mask_key(state)`, the key its mask is cached under (the prior keeps one
device row per key). A state is (machine state id, characters left under the cap).

A token is allowed when all its characters keep the text in the grammar (`data/text_grammar.py`),
it fits in the characters left, and from where it leads the answer can still end within the cap;
EOS is allowed where the machine accepts. Cost on the host: per machine state reached, one walk of
every token's characters (lazily, cached); per (state, characters left clipped to what can matter),
one vectorised [V] mask (cached). A tree node's step is a table lookup.
"""

from __future__ import annotations

import numpy as np

from specdifftree.data.text_grammar import ALPHABET, Machine, dist, walk

State = tuple[int, int]  # (machine state id, characters left)


class TextGrammar:
    """Per-state token masks of a character machine over `token_strings` (len V); `eos_id` ends the answer."""

    def __init__(self, machine: Machine, token_strings: list[str], eos_id: int):
        self.machine = machine
        self.eos_id = int(eos_id)
        allowed = set(ALPHABET)
        self.strings = [s if s and i != self.eos_id and set(s) <= allowed else "" for i, s in enumerate(token_strings)]
        self.lengths = np.array([len(s) for s in self.strings], dtype=np.int64)  # 0: never allowed
        self.cap = int(machine.cap)
        self.clip = int(self.lengths.max(initial=1)) + machine.max_dist() + 1  # more characters left change nothing
        self._ids: dict = {}
        self._states: list = []
        self._dist: list[float] = []
        self._next: dict[int, np.ndarray] = {}  # state id -> [V] next state id (-1: breaks the grammar)
        self._masks: dict[tuple[int, int], np.ndarray] = {}

    def _id(self, s) -> int:
        if s not in self._ids:
            self._ids[s] = len(self._states)
            self._states.append(s)
            self._dist.append(dist(self.machine, s))
        return self._ids[s]

    def _next_of(self, sid: int) -> np.ndarray:
        """[V] the machine state id after each token from state `sid` (-1 where it breaks the grammar)."""
        if sid not in self._next:
            s = self._states[sid]
            ends = [walk(self.machine, s, t) if t else None for t in self.strings]
            self._next[sid] = np.array([-1 if e is None else self._id(e) for e in ends], dtype=np.int64)
        return self._next[sid]

    @property
    def start(self) -> State:
        return (self._id(self.machine.start), self.cap)

    def max_tokens(self) -> int:
        """Every allowed token writes at least one character: the cap, then EOS."""
        return self.cap + 1

    def mask_key(self, state: State) -> tuple[int, int]:
        return (state[0], min(state[1], self.clip))

    def mask(self, state: State) -> np.ndarray:
        """Additive log-mask [V] float32: 0 where the token keeps the answer well-formed, -inf elsewhere."""
        key = self.mask_key(state)
        if key not in self._masks:
            sid, left = key
            nxt = self._next_of(sid)
            dists = np.array(self._dist, dtype=np.float64)[np.maximum(nxt, 0)]
            ok = (nxt >= 0) & (self.lengths >= 1) & (self.lengths <= left) & (dists <= left - self.lengths)
            m = np.where(ok, 0.0, -np.inf).astype(np.float32)
            if self.machine.accepting(self._states[sid]):
                m[self.eos_id] = 0.0
            self._masks[key] = m
        return self._masks[key]

    def step(self, state: State, token: int) -> State:
        if int(token) == self.eos_id:
            return state
        nxt = int(self._next_of(state[0])[int(token)])
        return (max(nxt, 0), state[1] - int(self.lengths[int(token)]))


__all__ = ["TextGrammar"]

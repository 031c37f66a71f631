"""A token mask that keeps forecast text inside the number codec's grammar with exactly H values.

Grammar (integers, LLMTime style):  value (sep value){H-1} EOS,  value = "-"? digit{1..D}.
The prior becomes p(x | x is a well-formed forecast): disallowed tokens get -inf before the
log-softmax, so every sampled forecast parses to exactly H numbers. A multi-character token is
allowed when it is digits only, "-" followed by digits, or exactly the separator.

State of a prefix: (values finished, digits in the current value, current value has a sign).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

State = tuple[int, int, bool]


@dataclass
class ForecastGrammar:
    token_strings: list[str]
    eos_id: int
    horizon: int
    sep: str = ","
    max_digits: int = 5

    def __post_init__(self):
        V = len(self.token_strings)
        self.n_digits = np.full(V, -1)  # digits in a digits-only token (or "-digits" token)
        self.signed = np.zeros(V, bool)
        self.is_sep = np.zeros(V, bool)
        for i, s in enumerate(self.token_strings):
            body = s[1:] if s.startswith("-") else s
            if s == self.sep:
                self.is_sep[i] = True
            elif body.isascii() and (body.isdigit() or (s == "-")):
                self.n_digits[i] = len(body)
                self.signed[i] = s.startswith("-")
        self.n_digits[self.eos_id] = -1
        self._masks: dict[State, np.ndarray] = {}

    @property
    def start(self) -> State:
        return (0, 0, False)

    def max_tokens(self) -> int:
        """An upper bound on tokens before EOS (sign + digits + separator per value)."""
        return self.horizon * (self.max_digits + 2)

    def mask(self, state: State) -> np.ndarray:
        """Additive log-mask [V]: 0 where the token keeps the prefix well-formed, -inf elsewhere."""
        if state not in self._masks:
            done, digits, signed = state
            ok = (self.n_digits >= 0) & ~self.signed & (digits + self.n_digits <= self.max_digits)
            if digits == 0 and not signed:
                ok |= self.signed & (self.n_digits <= self.max_digits)
            if digits > 0 and done < self.horizon - 1:
                ok |= self.is_sep
            m = np.where(ok, 0.0, -np.inf).astype(np.float32)
            if digits > 0 and done == self.horizon - 1:
                m[self.eos_id] = 0.0
            self._masks[state] = m
        return self._masks[state]

    def step(self, state: State, token: int) -> State:
        done, digits, signed = state
        if self.is_sep[token] or token == self.eos_id:
            return (done + 1, 0, False)
        return (done, digits + int(self.n_digits[token]), signed or bool(self.signed[token]))

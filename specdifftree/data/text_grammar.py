"""Character-level grammars of the text tasks' answers (caption, qa), independent of any vocabulary.

A machine walks the answer one character at a time through small hashable states; `prior/grammars.py`
turns it into per-state token masks for any tokenizer, and `accepts` checks a finished text (the
`format` reward). Every state knows `dist`: the fewest characters that reach a state where the answer
may end, so a length cap can always be met.

Caption (`CaptionMachine`): sentences of words and numbers, each ending in ".", "!" or "?", one
space between sentences; a sentence starts with a letter or a digit. Words are letters with
"'", "-" or "/" inside and ",", ";", ":", ")" or "%" after; a number is "-"? digits{1..D}
("." digits{1..P})?, written as the caption codec writes it (`data/captions/text.py`'s fmt: fixed
point, at most P places), and may not touch a letter. The answer may end (EOS) only after a whole
sentence.

QA (`QAMachine`): optional reasoning (caption sentences), then exactly "Answer: <choice>" starting a
sentence, then the end: "Answer: " followed by the characters of one of the choices (a trie).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Hashable, Optional, Sequence

LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
DIGITS = frozenset("0123456789")
ENDS = frozenset(".!?")
AFTER_WORD = frozenset(",;:")  # a space must follow
JOINERS = frozenset("-/")  # inside a word: "x-axis", "up/down"
CLOSERS = frozenset(")%'")
ALPHABET = "".join(sorted(LETTERS | DIGITS | ENDS | AFTER_WORD | JOINERS | CLOSERS | {" ", "("}))
ANSWER = "Answer: "

State = Hashable


@dataclass(frozen=True)
class CaptionMachine:
    """Sentences with codec-written numbers (module docstring). max_places: P, digits after the
    point; max_digits: D, digits before it; cap: most characters of the answer."""

    cap: int = 240
    max_places: int = 2
    max_digits: int = 9

    @property
    def start(self) -> State:
        return ("S",)

    def accepting(self, s: State) -> bool:
        return s[0] in ("E", "ND")

    def step(self, s: State, c: str) -> Optional[State]:
        """The state after character c, or None when c breaks the grammar."""
        kind = s[0]
        if kind == "S":
            return ("W",) if c in LETTERS else ("N", 1) if c in DIGITS else None
        if kind == "W":
            if c in LETTERS or c in CLOSERS:
                return ("W",)
            return self._after_token(c)
        if kind in ("SP", "O", "J"):
            if c in LETTERS:
                return ("W",)
            if c in DIGITS:
                return ("N", 1)
            if kind != "J" and c == "-":
                return ("NS",)
            return ("O",) if kind == "SP" and c == "(" else None
        if kind == "C":
            return ("SP",) if c == " " else None
        if kind == "NS":
            return ("N", 1) if c in DIGITS else None
        if kind == "N":
            if c in DIGITS:
                return ("N", s[1] + 1) if s[1] < self.max_digits else None
            return ("ND",) if c == "." else self._after_number(c)
        if kind == "ND":  # "12." is a sentence end unless a digit follows
            if c in DIGITS and self.max_places > 0:
                return ("F", 1)
            return ("S",) if c == " " else None
        if kind == "F":
            if c in DIGITS:
                return ("F", s[1] + 1) if s[1] < self.max_places else None
            return ("E",) if c in ENDS else self._after_number(c)
        if kind == "E":
            return ("S",) if c == " " else None
        return None

    def _after_token(self, c: str) -> Optional[State]:
        if c in ENDS:
            return ("E",)
        if c in AFTER_WORD:
            return ("C",)
        if c in JOINERS:
            return ("J",)
        return ("SP",) if c == " " else None

    def _after_number(self, c: str) -> Optional[State]:
        return ("W",) if c in CLOSERS else self._after_token(c)

    def max_dist(self) -> int:
        """An upper bound on `dist` over reachable states."""
        return 3


@dataclass(frozen=True)
class QAMachine:
    """Optional reasoning sentences, then "Answer: <choice>" (module docstring). reasoning_cap: most
    characters of reasoning; cap: the whole answer's (reasoning, "Answer: " and the longest choice)."""

    choices: tuple[str, ...]
    reasoning_cap: int = 160
    max_places: int = 2

    def __post_init__(self):
        prefixes = {c[:i] for c in self.choices for i in range(len(c) + 1)}
        object.__setattr__(self, "_prefixes", frozenset(prefixes))
        object.__setattr__(self, "_text", CaptionMachine(self.reasoning_cap, self.max_places))

    @property
    def cap(self) -> int:
        return self.reasoning_cap + len(ANSWER) + max(map(len, self.choices))

    @property
    def start(self) -> State:
        return ("R", ("S",), 0)

    def accepting(self, s: State) -> bool:
        return s[0] == "T" and s[1] in self.choices

    def step(self, s: State, c: str) -> Optional[State]:
        if s[0] == "T":
            return ("T", s[1] + c) if s[1] + c in self._prefixes else None
        if s[0] == "A":  # inside the literal "Answer: "
            k = s[1]
            if ANSWER[k] != c:
                return None
            return ("A", k + 1) if k + 1 < len(ANSWER) else ("T", "")
        sub, k = s[1], s[2]
        if k == len("Answer") and c == ":":
            return ("A", k + 1)
        if (sub == ("S",) and c == "A") or (0 < k < len("Answer") and ANSWER[k] == c):
            k += 1  # this sentence may be the answer
        else:
            k = 0
        nxt = self._text.step(sub, c)
        return None if nxt is None else ("R", nxt, k)

    def max_dist(self) -> int:
        return 3 + len(ANSWER) + min(map(len, self.choices))


Machine = CaptionMachine | QAMachine


def dist(machine: Machine, s: State, limit: int = 256) -> float:
    """The fewest characters from s to a state where the answer may end (inf when none within limit)."""
    seen, queue = {s}, deque([(s, 0)])
    while queue:
        state, d = queue.popleft()
        if machine.accepting(state):
            return float(d)
        if d >= limit:
            continue
        for c in ALPHABET:
            nxt = machine.step(state, c)
            if nxt is not None and nxt not in seen:
                seen.add(nxt)
                queue.append((nxt, d + 1))
    return float("inf")


def walk(machine: Machine, s: Optional[State], text: str) -> Optional[State]:
    """The state after every character of text (None once one breaks the grammar)."""
    for c in text:
        if s is None:
            return None
        s = machine.step(s, c)
    return s


def accepts(machine: Machine, text: str) -> bool:
    """Whether text is a whole answer of the grammar, within its length cap."""
    end = walk(machine, machine.start, text)
    return end is not None and machine.accepting(end) and len(text) <= machine.cap


def caption_machine(cap: int, places: int) -> CaptionMachine:
    return CaptionMachine(cap=int(cap), max_places=int(places))


def qa_machine(choices: Sequence[str], reasoning_cap: int, places: int = 2) -> QAMachine:
    return QAMachine(tuple(choices), int(reasoning_cap), int(places))


__all__ = ["ALPHABET", "ANSWER", "CaptionMachine", "Machine", "QAMachine", "accepts", "caption_machine", "dist",
           "qa_machine", "walk"]

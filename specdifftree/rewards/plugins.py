"""`--reward SPEC` -> one reward function: builtin terms and plugins, weighted and summed.

Grammar (whitespace around tokens is ignored):

    spec   := term ( "+" term )*          e.g. "spectral + 0.5*format"
    term   := ( weight "*" )? name        weight: a finite float ("1e+3" is one weight)
    name   := builtin                     a key of REWARDS
            | path ".py" ":" fn           a Python file, loaded under a unique module name
            | module ":" fn               an importable module (dotted name)
            | "sensorlm:" DIR             a trained sensorlm model's text-series fit (sensorlm/reward.py)

Several specs (a repeated `--reward`) are summed as if joined by "+". Every term is called as
`fn(text, context) -> float`; the sum is a `CompositeReward`, or the term itself when there is
one term of weight 1. Either way the reward carries its normalised spec as `reward.spec`
(`reward_spec`: "spectral+0.5*format"), which flow networks and search buffers are checked against.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

from specdifftree.errors import SDTError, unknown_name
from specdifftree.data.context import Context
from specdifftree.rewards.base import RewardFn
from specdifftree.rewards.format import BoundsReward, FormatReward, LengthReward, SmoothnessReward
from specdifftree.rewards.spectral import SpectralReward
from specdifftree.rewards.structure import CaptionConsistencyReward
from specdifftree.rewards.text import AnswerConsistencyReward


def zero(text: str, context: Context) -> float:
    """Always 0: search then samples the prior itself."""
    return 0.0


zero.name = "zero"  # type: ignore[attr-defined]

REWARDS: dict[str, Callable[[], RewardFn]] = {
    "spectral": SpectralReward,
    "format": FormatReward,
    "length": LengthReward,
    "smoothness": SmoothnessReward,
    "bounds": BoundsReward,
    "caption-consistency": CaptionConsistencyReward,
    "answer-consistency": AnswerConsistencyReward,
    "zero": lambda: zero,
}

_PLUS = re.compile(r"(?<![0-9][eE])\+")  # a "+" that is not an exponent sign as in 1e+3


@dataclass
class PluginReward:
    """A user function `fn(text, context) -> float`, named by its spec."""

    name: str
    fn: Callable

    def __call__(self, text: str, context: Context) -> float:
        return float(self.fn(text, context))


@dataclass
class CompositeReward:
    """sum_i w_i * r_i(text, context) over `terms` [(w_i, r_i)]."""

    terms: list[tuple[float, RewardFn]]
    spec: str = ""  # the normalised spec it was parsed from (`reward_spec`)

    @property
    def name(self) -> str:
        return self.describe()

    def describe(self) -> str:
        """The terms as a spec, e.g. 'spectral + 0.5*format'."""
        return " + ".join(_label(fn) if w == 1 else f"{w:g}*{_label(fn)}" for w, fn in self.terms)

    def __call__(self, text: str, context: Context) -> float:
        return float(sum(w * float(fn(text, context)) for w, fn in self.terms))


def parse_reward(specs: list[str] | str) -> RewardFn:
    """One reward from one or several specs (grammar in the module docstring), carrying its normalised
    spec as `.spec`; SDTError if malformed."""
    specs = [specs] if isinstance(specs, str) else list(specs)
    if not specs or any(not spec.strip() for spec in specs):
        raise SDTError("empty reward spec: give --reward NAME, e.g. --reward spectral")
    terms = [(w, _resolve(name)) for w, name in _terms(specs)]
    reward = terms[0][1] if len(terms) == 1 and terms[0][0] == 1.0 else CompositeReward(terms)
    reward.spec = reward_spec(specs)
    return reward


def reward_spec(specs: list[str] | str) -> str:
    """Reward specs in one normal form: terms joined by "+", a weight other than 1 as "W*", no
    spaces; ["spectral + 0.5*format"] and ["spectral", "0.5 * format"] both give "spectral+0.5*format",
    no spec gives "" (a built-in problem's own reward). Nothing is imported; SDTError if malformed."""
    specs = [specs] if isinstance(specs, str) else list(specs)
    return "+".join(name if w == 1.0 else f"{repr(w).removesuffix('.0')}*{name}" for w, name in _terms(specs))


def _terms(specs: list[str]) -> list[tuple[float, str]]:
    """Every '[WEIGHT*]NAME' term of the specs -> (weight, name)."""
    out = []
    for spec in specs:
        for term in _PLUS.split(spec):
            weight_text, star, name = term.strip().rpartition("*")
            name = name.strip()
            if not name:
                raise SDTError(f"empty term in reward spec '{spec}': expected [WEIGHT*]NAME, e.g. 'spectral + 0.5*format'")
            out.append(((_weight(weight_text, spec) if star else 1.0), name))
    return out


def _weight(text: str, spec: str) -> float:
    try:
        w = float(text)
    except ValueError:
        w = math.nan
    if not math.isfinite(w):
        raise SDTError(f"malformed weight '{text.strip()}' in reward spec '{spec}': expected a number as in '0.5*format'")
    return w


def _resolve(name: str) -> RewardFn:
    if name in REWARDS:
        return REWARDS[name]()
    if name.startswith("sensorlm:"):  # a trained sensorlm directory (sdt sensorlm train), not module:fn
        from specdifftree.sensorlm.reward import sensorlm_reward

        return sensorlm_reward(name)
    target, colon, fn = name.rpartition(":")
    if not colon or not target or not fn:
        raise unknown_name("reward", name, REWARDS, f"{', '.join(REWARDS)}, or path/to/file.py:fn, or module:fn")
    module = _load_file(target) if target.endswith(".py") else _load_module(target)
    if not hasattr(module, fn):
        raise SDTError(f"reward plugin '{name}': no function '{fn}' in {target}")
    reward = getattr(module, fn)
    if not callable(reward):
        raise SDTError(f"reward plugin '{name}': '{fn}' in {target} is not callable (a {type(reward).__name__})")
    return PluginReward(name, reward)


def _load_file(target: str) -> ModuleType:
    path = Path(target).expanduser().resolve()
    if not path.is_file():
        raise SDTError(f"reward plugin file '{target}' does not exist")
    module_name = f"sdt_reward_plugin_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure in user code is reported the same way
        del sys.modules[module_name]
        raise SDTError(f"reward plugin file '{target}' failed to import: {_one_line(exc)}") from exc
    return module


def _load_module(target: str) -> ModuleType:
    try:
        return importlib.import_module(target)
    except Exception as exc:  # noqa: BLE001 - ImportError or an error raised by the module itself
        raise SDTError(f"cannot import module '{target}' for a reward plugin: {_one_line(exc)}") from exc


def _label(fn: RewardFn) -> str:
    """A reward's name: its `name`, else its function or class name."""
    return getattr(fn, "name", None) or getattr(fn, "__name__", None) or type(fn).__name__


def _one_line(exc: BaseException) -> str:
    """'Type: first line of the message'."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__

"""The number codec: a forecast as text <-> its values, LLMTime-style.

A series is written as fixed-precision decimals joined by a separator, after an affine map
chosen from the context (`fit`), so typical values print with a few digits:

    text field = format((x - offset) / scale, f".{precision}f")
    "12.34,5.00,-3.10"

Forecast prompts use the anchored form (`anchored`): integers with the last history value at 500,
so a forecast is written as its change from the last value ("480,512,500" -> "503,497,...").

With `width` > 0 the digits before the point are zero-padded to at least `width` ("095,112,-007"
at width 3): values of one series then take the same number of characters, so the value k steps
back is always the same number of tokens back (what a small model needs to copy a level or a
season), and no value reads as a shorter one with a digit dropped.

Parsing is total: `decode` never raises on any string, because its input is model output.
Grammar of a field (ASCII digits only; whitespace is anything `str.strip()` removes):

    field  := ws* number ws*
    number := "-"? ( digit+ ( "." digit* )? | "." digit+ )

so "7", "-0.25", "3." and ".5" are numbers; "", "-", ".", "1.2.3", "+1", "1e3", "nan", "inf" and
anything with other characters are bad fields. A number whose value (after mapping back by
scale/offset) is not finite, e.g. four hundred nines, is a bad field too.

Fields are the pieces of the text between separators; the separator is matched without its
surrounding whitespace, so with sep=" , " both "1,2" and "1 , 2" read as two fields. A text that is empty or only whitespace
has no fields. When the separator is whitespace (e.g. " "), fields are the runs of
non-whitespace instead, so no field is ever empty. Otherwise a blank last field means the text
ended in a separator: it is not counted as a field, and `trailing` is set. `trailing` is also set
when the last field is an unfinished number: "-", ".", "-." or a number ending in "." (the
last is still a valid number: "3." reads as 3).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from specdifftree.errors import SDTError

_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_UNFINISHED = re.compile(r"-|-?[0-9]*\.")


@dataclass
class Parsed:
    """What `NumberCodec.decode` read from a text.

    values:   [n] float64, the valid numbers in order, mapped back by scale/offset; all finite.
    n_tokens: number of fields (separator-delimited pieces), valid or not.
    n_bad:    fields that are not valid numbers (n_tokens == len(values) + n_bad).
    trailing: the text ended in a separator or an unfinished number.
    """

    values: np.ndarray
    n_tokens: int
    n_bad: int
    trailing: bool

    @property
    def n_values(self) -> int:
        return len(self.values)


@dataclass
class NumberCodec:
    """Fixed-precision decimals joined by `sep`; the text shows (x - offset) / scale."""

    precision: int = 2
    sep: str = ","
    scale: float = 1.0
    offset: float = 0.0
    width: int = 0  # zero-pad the digits before the point to at least this many (0: no padding)

    def __post_init__(self) -> None:
        checks = [
            (isinstance(self.width, (int, np.integer)) and self.width >= 0, "width must be an integer >= 0"),
            (isinstance(self.precision, (int, np.integer)) and self.precision >= 0, "precision must be an integer >= 0"),
            (len(self.sep) > 0 and not re.search(r"[0-9.\-]", self.sep),
             "the separator must be non-empty and hold no digit, '.' or '-'"),
            (math.isfinite(self.scale) and self.scale > 0, "scale must be a positive finite number"),
            (math.isfinite(self.offset), "offset must be a finite number"),
        ]
        for ok, msg in checks:
            if not ok:
                raise SDTError(f"number codec: {msg} (got {self!r})")

    @classmethod
    def fit(cls, series, precision: int = 2, sep: str = ",", digits: int = 3, width: int = 0) -> "NumberCodec":
        """A codec for forecasts continuing `series` [L], in absolute values (LLMTime style; forecast
        prompts use `anchored` instead).

        Rule: offset = 0 and scale = 10**(e + 1 - digits), where e = floor(log10(q)) and q is the
        90th percentile of |series|. Then q / scale lies in [10**(digits-1), 10**digits): typical
        values print with `digits` digits before the point. A scale that is a power of ten keeps
        the text an exact decimal shift of the values. When q == 0 (an all-zero series, or one
        that is mostly zeros) the scale is 1. Negative values are handled by the |.|.
        width: see the module docstring (`digits` pads typical values to their own width).
        """
        x = _fittable(series)
        if not (isinstance(digits, int) and digits >= 1):
            raise SDTError(f"cannot fit a number codec: digits must be an integer >= 1 (got {digits!r})")
        q = float(np.percentile(np.abs(x), 90))
        scale = 1.0 if q == 0 else 10.0 ** (_decade(q) + 1 - digits)
        return cls(precision=precision, sep=sep, scale=scale, offset=0.0, width=width)

    @classmethod
    def anchored(cls, series, sep: str = ",", centre: int = 500, span: int = 400, width: int = 3) -> "NumberCodec":
        """Integers around `centre` for the last value of `series` [L]: text = round((x - last) / scale) + centre.

        Rule: d = max |series - last|, and scale is the smallest power of ten with d <= span * scale,
        so the whole history prints in [centre - span, centre + span] (three digits at the defaults)
        and the last value as exactly `centre`: a forecast that repeats the last value is
        "500,500,...", the same text for every series, and the model learns the change from the
        last value rather than the level. When the series is constant, d is |last| (1 when that is 0,
        or when d / span would underflow).
        """
        x = _fittable(series)
        if not (isinstance(span, int) and 1 <= span <= centre):
            raise SDTError(f"cannot fit a number codec: span must be an integer in [1, centre] (got {span!r})")
        last = float(x[-1])
        d = float(np.max(np.abs(x - last))) or abs(last) or 1.0
        if d / span < np.finfo(float).tiny:  # a history of subnormal numbers: as if it were all zero
            d = 1.0
        e = _decade(d / span)  # 10**e <= d / span < 10**(e + 1)
        scale = 10.0 ** e if 10.0 ** e == d / span else 10.0 ** (e + 1)  # the smallest power of ten >= d / span
        return cls(precision=0, sep=sep, scale=scale, offset=last - centre * scale, width=width)

    def encode(self, values) -> str:
        """Text of `values` [H]. Raises SDTError on NaN/inf (user input, not model output)."""
        x = np.asarray(values, dtype=np.float64).ravel()
        if not np.all(np.isfinite(x)):
            raise SDTError("cannot write NaN or inf values as text; clean the series first")
        z = np.round((x - self.offset) / self.scale, self.precision) + 0.0  # + 0.0: no "-0.00"
        return self.sep.join(map(self._field, z))

    def _field(self, v: float) -> str:
        """One value's text: sign, digits before the point zero-padded to `width`, decimals."""
        body = f"{abs(v):.{self.precision}f}"
        body = body.zfill(self.width + len(body) - len(body.split(".")[0]))
        return "-" + body if v < 0 else body

    def decode(self, text: str) -> Parsed:
        """Parse model text by the grammar in the module docstring. Never raises."""
        fields, trailing = _split(str(text), self.sep)
        values = [v for v in map(self._value, fields) if v is not None]
        if fields:
            trailing = trailing or _UNFINISHED.fullmatch(fields[-1].strip()) is not None
        return Parsed(np.asarray(values, dtype=np.float64), len(fields), len(fields) - len(values), trailing)

    def values_for(self, text: str, horizon: Optional[int] = None) -> np.ndarray:
        """The first `horizon` parsed values [min(n, H)]: exactly H when at least H parse, else all
        that parsed; every parsed value when `horizon` is None."""
        values = self.decode(text).values
        return values if horizon is None else values[:horizon]

    def finished(self, text: str) -> str:
        """The text up to and including its last separator: the numbers a partial forecast has
        finished ("345,350,3" -> "345,350,"; "" before the first separator). Its last field may
        still grow ("3" becomes "345"), so a reward of the partial text must not read it."""
        sep = self.sep.strip() or self.sep
        cut = str(text).rfind(sep)
        return "" if cut < 0 else str(text)[:cut + len(sep)]

    def _value(self, field: str) -> Optional[float]:
        """The field's value mapped back, or None when it is not a valid finite number."""
        s = field.strip()
        if _NUMBER.fullmatch(s) is None:
            return None
        v = float(s) * self.scale + self.offset  # float overflow gives inf, never an error
        return v if math.isfinite(v) else None


def codec_for(context: Any) -> NumberCodec:
    """The codec of a reward `Context`, or the default `NumberCodec()` when it has none."""
    codec = getattr(context, "codec", None)
    return codec if codec is not None else NumberCodec()


FLOAT32_MAX = float(np.finfo(np.float32).max)  # priors read series as float32 (the encoder, the bias head)


def _fittable(series) -> np.ndarray:
    """`series` as a flat float64 array [L], or an SDTError when it is empty, not finite, or holds a
    value float32 cannot carry (checked here, before any cast overflows with a numpy warning)."""
    x = np.asarray(series, dtype=np.float64).ravel()
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise SDTError("cannot fit a number codec: the series is empty or holds NaN/inf values")
    big = np.flatnonzero(np.abs(x) > FLOAT32_MAX)
    if len(big):
        raise SDTError(f"the series value {x[big[0]]:g} at index {big[0]} exceeds float32 (largest "
                       f"{FLOAT32_MAX:.4g}), in which the prior reads series: rescale the series")
    return x


def _split(text: str, sep: str) -> tuple[list[str], bool]:
    """(fields, ended in a separator) per the module docstring."""
    if not text.strip():
        return [], False
    if not sep.strip():
        return text.split(), False
    fields = text.split(sep.strip())
    ended_in_sep = len(fields) > 1 and not fields[-1].strip()
    return (fields[:-1] if ended_in_sep else fields), ended_in_sep


def _decade(q: float) -> int:
    """floor(log10(q)) for q > 0, corrected for rounding in log10."""
    e = math.floor(math.log10(q))
    if 10.0 ** (e + 1) <= q:
        e += 1
    elif 10.0 ** e > q:
        e -= 1
    return e

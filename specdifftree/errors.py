"""The one error type a user sees (the CLI prints its message on one line and exits with code 2),
and the one "did you mean" lookup every registry and config check uses for a name it does not know."""

from __future__ import annotations

import difflib
from typing import Iterable, Optional


class SDTError(Exception):
    """Bad input or configuration. The message says what is wrong and, where it can, what to do."""


def close_match(word: str, known: Iterable[str]) -> Optional[str]:
    """The known name closest to `word` (difflib's ratio, cut-off 0.6), or None when none is close
    or the closest is `word` itself."""
    hint = difflib.get_close_matches(str(word), [str(k) for k in known], n=1)
    return hint[0] if hint and hint[0] != word else None


def unknown_name(what: str, name: str, known: Iterable[str], listing: Optional[str] = None,
                 word: Optional[str] = None) -> SDTError:
    """SDTError "unknown WHAT 'NAME'. Did you mean 'X'? Known: LISTING".

    known:   the valid names, matched against `word` (default: `name`) for the hint
    listing: what "Known:" lists (default: the known names, comma-separated)
    """
    known = list(known)
    hint = close_match(name if word is None else word, known)
    did = f" Did you mean '{hint}'?" if hint else ""
    return SDTError(f"unknown {what} '{name}'.{did} Known: {', '.join(known) if listing is None else listing}")


__all__ = ["SDTError", "close_match", "unknown_name"]

"""`--prior KIND:ARG` -> a Prior. Backends import lazily, so only the one asked for is loaded."""

from __future__ import annotations

import difflib

from specdifftree.errors import SDTError
from specdifftree.prior.base import Prior


def _markov(arg: str) -> Prior:
    from specdifftree.prior.markov import MarkovPrior
    from specdifftree.bench.problems import BUILTIN_PROBLEMS

    if arg in BUILTIN_PROBLEMS:
        return BUILTIN_PROBLEMS[arg]().prior
    return MarkovPrior.from_json(arg)


PRIOR_KINDS = {
    "markov": (_markov, "markov:FILE.json, or a built-in problem name (see `sdt bench exactness --list`)"),
}


def load_prior(spec: str) -> Prior:
    kind, sep, arg = spec.partition(":")
    if kind not in PRIOR_KINDS or not sep or not arg:
        known = ", ".join(f"{k} ({v[1]})" for k, v in PRIOR_KINDS.items())
        hint = difflib.get_close_matches(kind, PRIOR_KINDS, n=1)
        did = f" Did you mean '{hint[0]}:...'?" if hint and hint[0] != kind else ""
        raise SDTError(f"unknown prior '{spec}'.{did} Known: {known}")
    return PRIOR_KINDS[kind][0](arg)

"""Priors: what search methods sample from (`prior/base.py`). Specs are parsed in `prior/spec.py` and
opened into priors in `prior/sources.py`; `prior/builtin.py` holds the built-in enumerable problems."""

from specdifftree.prior.base import Cost, Prior

__all__ = ["Cost", "Prior"]

"""Priors: what search methods sample from (`prior/base.py`). Specs become priors in `problem.py`."""

from specdifftree.prior.base import Cost, Prior

__all__ = ["Cost", "Prior"]

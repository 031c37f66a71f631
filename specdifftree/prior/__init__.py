"""Priors: what search methods sample from. `load_prior("markov:FILE.json")` picks one by spec."""

from specdifftree.prior.base import Cost, Prior
from specdifftree.prior.registry import PRIOR_KINDS, load_prior

__all__ = ["Cost", "Prior", "PRIOR_KINDS", "load_prior"]

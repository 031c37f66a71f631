"""Search methods by name. Entries are "module:function", imported only when used.

Every method is called as `fn(problem, cfg, rng, progress=None) -> SearchResult`.
"""

from __future__ import annotations

import difflib
import importlib

from specdifftree.errors import SDTError

METHODS: dict[str, tuple[str, str]] = {
    "dts": ("specdifftree.search.dts:run_dts", "Diffusion Tree Sampling: samples from pi* by re-descending the tree"),
    "dts-star": ("specdifftree.search.dts:run_dts_star", "DTS*: UCT selection on soft values; best sequences found"),
    "greedy": ("specdifftree.search.sampling:run_greedy", "argmax decoding"),
    "sample": ("specdifftree.search.sampling:run_sample", "ancestral sampling (--temperature, --top-k, --top-p)"),
    "best-of-n": ("specdifftree.search.best_of_n:run_best_of_n", "N prior samples, best by reward first"),
    "best-of-n-is": ("specdifftree.search.best_of_n:run_best_of_n_is", "N prior samples, resampled ~ exp(lam r)"),
    "beam": ("specdifftree.search.beam:run_beam", "beam search on log p, finished beams ranked by log p + lam r"),
    "smc": ("specdifftree.search.smc:run_smc", "sequential Monte Carlo, resampling on an ESS threshold"),
    "mcts": ("specdifftree.search.mcts:run_mcts", "UCT Monte-Carlo tree search with mean backups"),
    "sadt": ("specdifftree.search.sadt:run_sadt", "DTS amortized by a flow network (--flow DIR, --alpha, --rollout)"),
    "sadt-sample": ("specdifftree.search.sadt:run_sadt_sample", "direct sampling from the flow's policy q (--flow DIR)"),
}


def get_method(name: str):
    if name not in METHODS:
        hint = difflib.get_close_matches(name, METHODS, n=1)
        did = f" Did you mean '{hint[0]}'?" if hint else ""
        raise SDTError(f"unknown method '{name}'.{did} Known: {', '.join(METHODS)}")
    module, _, fn = METHODS[name][0].partition(":")
    return getattr(importlib.import_module(module), fn)

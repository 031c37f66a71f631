"""Search methods by name, and `run_search`. Entries are "module:function", imported only when used
(methods built on a flow network live with it in `amortize/` and register here the same way).

Every method is called as `fn(problem, cfg, rng, progress=None) -> SearchResult`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from specdifftree.entries import load_entry
from specdifftree.errors import unknown_name
from specdifftree.search.common import Problem, SearchConfig, SearchResult


@dataclass(frozen=True)
class Method:
    """A registered method and the families it belongs to.

    tree:        grows a tree for `cfg.iterations` (progress counts iterations)
    soft_values: its tree holds soft values (a search buffer for `sdt amortize` can be made from it)
    uses_flow:   needs a flow network (`cfg.flow`)
    reference:   a plain forecaster of the numeric history (search/reference.py): never calls the
                 prior (0 forward tokens); its forecasts are written with the context's codec
    """

    entry: str
    about: str
    tree: bool = False
    soft_values: bool = False
    uses_flow: bool = False
    reference: bool = False

    def load(self):
        return load_entry(self.entry)

    def __call__(self, problem: Problem, cfg: SearchConfig, rng: np.random.Generator, progress=None) -> SearchResult:
        """Run the method as it is (unseeded, unvalidated: `run_search` is the usual way in)."""
        return self.load()(problem, cfg, rng, progress=progress)


METHODS: dict[str, Method] = {
    "dts": Method("specdifftree.search.dts:run_dts", "Diffusion Tree Sampling: samples from pi* by re-descending the tree",
                  tree=True, soft_values=True),
    "dts-star": Method("specdifftree.search.dts:run_dts_star", "DTS*: UCT selection on soft values; best sequences found",
                       tree=True, soft_values=True),
    "greedy": Method("specdifftree.search.sampling:run_greedy", "argmax decoding"),
    "sample": Method("specdifftree.search.sampling:run_sample", "ancestral sampling (--temperature, --top-k, --top-p)"),
    "best-of-n": Method("specdifftree.search.best_of_n:run_best_of_n", "N prior samples, best by reward first"),
    "best-of-n-is": Method("specdifftree.search.best_of_n:run_best_of_n_is", "N prior samples, resampled ~ exp(lam r)"),
    "beam": Method("specdifftree.search.beam:run_beam", "beam search on log p, finished beams ranked by log p + lam r"),
    "smc": Method("specdifftree.search.smc:run_smc", "sequential Monte Carlo, resampling on an ESS threshold"),
    "mcts": Method("specdifftree.search.mcts:run_mcts", "UCT Monte-Carlo tree search with mean backups", tree=True),
    "sadt": Method("specdifftree.amortize.sadt:run_sadt", "DTS amortized by a flow network (--flow DIR, --alpha, --rollout)",
                   tree=True, uses_flow=True),
    "sadt-sample": Method("specdifftree.amortize.sadt:run_sadt_sample", "direct sampling from the flow's policy q (--flow DIR)",
                          uses_flow=True),
    "naive": Method("specdifftree.search.reference:run_naive", "the last value repeated; random-walk sample paths",
                    reference=True),
    "seasonal-naive": Method("specdifftree.search.reference:run_seasonal_naive",
                             "the last season repeated (--season); seasonal random-walk sample paths", reference=True),
    "stats:auto-ets": Method("specdifftree.search.reference:run_auto_ets",
                             "statsforecast AutoETS (--season); samples from its prediction interval", reference=True),
    "stats:auto-theta": Method("specdifftree.search.reference:run_auto_theta",
                               "statsforecast AutoTheta (--season); samples from its prediction interval", reference=True),
}

# SMC twists other than the built-in "partial" and "none": "module:function" -> fn(problem, cfg) -> twist
POTENTIALS: dict[str, str] = {"flow": "specdifftree.amortize.sadt:flow_potential"}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise unknown_name("method", name, METHODS)
    return METHODS[name]


def methods_where(**families: bool) -> tuple[str, ...]:
    """Names of the methods in the given families, e.g. `methods_where(uses_flow=True)`."""
    return tuple(n for n, m in METHODS.items() if all(getattr(m, k) == v for k, v in families.items()))


def uses_flow(method: str, cfg: SearchConfig) -> bool:
    """Whether `method` with `cfg` reads a flow network (sadt, sadt-sample, smc --potential flow)."""
    return get_method(method).uses_flow or (method == "smc" and cfg.potential in POTENTIALS)


def load_potential(name: str):
    return load_entry(POTENTIALS[name])


def run_search(problem: Problem, method: str, cfg: SearchConfig, show_progress: bool = False) -> SearchResult:
    """Run one method on a problem, seeded by `cfg.seed` (same seed, same output); `cfg.budget`
    caps the forward tokens this run spends."""
    entry = get_method(method)
    fn = entry.load()
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    if not show_progress:
        return fn(problem, cfg, rng)
    from specdifftree.progress import progress

    total = cfg.iterations if entry.tree else None
    with progress(total, method, "it" if total else "step") as bar:
        return fn(problem, cfg, rng, progress=bar.update)

"""SpecDiffTree: inference-time alignment of time-series language models.

Steer a prior p(x|c) towards pi*(x) ~ p(x|c) exp(lam r(x)) with Diffusion Tree Sampling over tokens.

    import specdifftree as sdt
    prior = sdt.open_prior("default")
    context = sdt.context_from_array(history, horizon=24)
    result = sdt.search(prior, context, reward="spectral", method="dts", budget=20_000)

The names below are loaded on first use (from `specdifftree/api.py`), so importing the package,
or `sdt --help`, stays instant.
"""

import sys
import types

__version__ = "0.1.0"

__all__ = ["AmortizeConfig", "Context", "METHODS", "PriorSource", "Queries", "SearchConfig", "SearchResult",
           "build_context", "collect_buffer", "context_from_array", "convert_opentslm", "forecast_record", "open_prior",
           "run_experiment", "search", "search_problem", "train_flow"]


def __getattr__(name: str):
    if name in __all__:
        from specdifftree import api

        return getattr(api, name)
    raise AttributeError(f"module 'specdifftree' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


class _Package(types.ModuleType):
    """`specdifftree.search` is the API's search function. The `search/` subpackage keeps its name:
    the import system finds `specdifftree.search.<module>` in sys.modules, and binding the subpackage
    over the function on first import is refused here."""

    def __setattr__(self, name: str, value) -> None:
        if name in __all__ and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

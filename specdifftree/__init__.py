"""SpecDiffTree: inference-time alignment of time-series language models.

Steer a prior p(x|c) towards pi*(x) ~ p(x|c) exp(lam r(x)) with Diffusion Tree Sampling over tokens.

    import specdifftree as sdt
    prior = sdt.open_prior("default")
    context = sdt.context_from_array(history, horizon=24)
    result = sdt.generate(prior, context, reward="spectral", method="dts", budget=20_000)

The names below are loaded on first use (from `specdifftree/api.py`), so importing the package,
or `sdt --help`, stays instant. `specdifftree.search` is the subpackage of search methods.
"""

__version__ = "0.1.0"

__all__ = ["AmortizeConfig", "Context", "METHODS", "Placement", "PriorSource", "Queries", "SearchConfig", "SearchResult",
           "SearchRun", "Task", "build_context", "collect_buffer", "context_from_array", "convert_opentslm",
           "forecast_record", "generate", "make_task", "open_prior", "run_experiment", "run_search", "search_many",
           "search_run", "task_context", "train_flow", "train_prior"]


def __getattr__(name: str):
    if name in __all__:
        from specdifftree import api

        return getattr(api, name)
    raise AttributeError(f"module 'specdifftree' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

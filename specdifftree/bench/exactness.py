"""`sdt bench exactness`: TV distance to the exact pi* against forward tokens, per method and budget.

Each cell runs a method on a built-in enumerable problem under a forward-token budget, draws
`samples` sequences (plain sampling returns only as many as the budget pays for), and measures
TV(empirical, pi*), averaged over seeds. The noise floor is the TV of the same number of exact
i.i.d. draws from pi*: no sampler can be expected to beat it.
"""

from __future__ import annotations

import numpy as np

from specdifftree.bench.exact import empirical, noise_floor, target, tv
from specdifftree.errors import SDTError
from specdifftree.prior.builtin import BUILTIN_PROBLEMS
from specdifftree.search.common import Problem, SearchConfig
from specdifftree.search.registry import get_method, run_search

DEFAULT_BUDGETS = {"toy3": [10, 20, 40, 80, 160], "deep2": [50, 100, 200, 400, 800]}


def list_problems() -> str:
    lines = []
    for name, make in BUILTIN_PROBLEMS.items():
        bp = make()
        p, t = target(Problem(bp.prior, bp.reward), bp.lam)
        lines.append(f"{name:8s} {bp.about}; {len(p)} sequences, lambda {bp.lam}, TV(prior, pi*) = {tv(p, t):.3f}")
    return "\n".join(lines)


def method_config(method: str, budget: int, max_len: int, samples: int, lam: float, seed: int,
                  child_weight: str = "prior") -> SearchConfig:
    """Settings that let each method spend (about) `budget` forward tokens, no more than one batch over."""
    per_seq = max(1, budget // max_len)
    return SearchConfig(
        samples=samples, lam=lam, budget=budget, seed=seed,
        iterations=20_000, batch_size=8,  # DTS stops at the budget, or when iterations run out
        n=min(8, per_seq), particles=max(2, per_seq), child_weight=child_weight,
    )


def exactness_cell(name: str, method: str, budget: int, samples: int, seed: int,
             child_weight: str = "prior") -> tuple[float, int, int, int]:
    """(TV to pi*, forward tokens, model calls, samples returned) of one run."""
    bp = BUILTIN_PROBLEMS[name]()
    problem = Problem(bp.prior, bp.reward)
    _, pi = target(problem, bp.lam)
    cfg = method_config(method, budget, bp.prior.max_len, samples, bp.lam, seed, child_weight)
    result = run_search(problem, method, cfg)
    return (tv(empirical([s.tokens for s in result.samples]), pi), result.forward_tokens, result.model_calls,
            len(result.samples))


def run_exactness(problems: list[str], budgets: list[int] | None, methods: list[str], samples: int,
                  seeds: int, progress: bool = True, child_weight: str = "prior") -> list[dict]:
    for name in problems:
        if name not in BUILTIN_PROBLEMS:
            raise SDTError(f"unknown problem '{name}'; built-in: {', '.join(BUILTIN_PROBLEMS)}")
    for m in methods:
        get_method(m)
    cells = [(p, m, b) for p in problems for b in (budgets or DEFAULT_BUDGETS.get(p, [100, 200, 400])) for m in methods]
    from specdifftree.progress import track

    rows = []
    for name, method, budget in track(cells, "exactness", "cells", enabled=progress):
        runs = [exactness_cell(name, method, budget, samples, seed, child_weight) for seed in range(seeds)]
        tvs = np.array([r[0] for r in runs])
        bp = BUILTIN_PROBLEMS[name]()
        _, pi = target(Problem(bp.prior, bp.reward), bp.lam)
        n_out = int(round(np.mean([r[3] for r in runs])))
        floor, _ = noise_floor(pi, n_out, np.random.default_rng(12345))
        rows.append({
            "problem": name, "method": method, "budget": budget,
            "forward_tokens": float(np.mean([r[1] for r in runs])),
            "model_calls": float(np.mean([r[2] for r in runs])),
            "samples": n_out, "tv": float(tvs.mean()), "tv_sd": float(tvs.std()), "noise_floor": floor,
        })
    return rows

"""SpecDiffTree as a library: the README's steps in one script, offline, on the embedded default prior.

    python examples/quickstart.py            # about a minute on 2 CPU cores (plus the default
                                             # backbone's one-time build, ~3 min, on first use)

1. load a prior once; 2. build contexts from numpy arrays; 3. search with several methods under a
forward-token budget; 4. train a flow network (S-ADT) on DTS trees and sample from it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

import specdifftree as sdt


def history_windows(n: int, length: int = 48, horizon: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
    """(history, truth) windows: ETTh1's oil temperature where the shared data is beside the
    checkout, else a noisy daily cycle."""
    csv = Path(__file__).resolve().parents[2] / "shared" / "data" / "ett" / "ETTh1.csv"
    if csv.is_file():
        series = np.genfromtxt(csv, delimiter=",", skip_header=1, usecols=7)
    else:
        t = np.arange(4000)
        series = 10 + 3 * np.sin(2 * np.pi * t / 24) + np.random.default_rng(0).normal(0, 0.3, t.size)
    ends = np.linspace(0.8 * len(series), len(series) - horizon, n).astype(int)  # the evaluation part
    return [(series[e - length:e], series[e:e + horizon]) for e in ends]


def main() -> None:
    prior = sdt.open_prior("default")  # the backbone (and an installed trained prior) load once
    (history, truth), *more = history_windows(4)
    context = sdt.context_from_array(history, horizon=len(truth), target=truth)

    print(f"{'method':12s} {'forward tokens':>14s} {'mean reward':>11s} {'MASE':>6s}")
    for method in ("sample", "best-of-n", "dts"):
        result = sdt.generate(prior, context, reward="spectral", method=method, budget=800, samples=8, seed=0)
        _, metrics = sdt.forecast_record(result, context)
        mean_reward = np.mean([s.reward for s in result.samples])
        print(f"{method:12s} {result.forward_tokens:14d} {mean_reward:11.3f} {metrics.get('mase', float('nan')):6.2f}")

    with tempfile.TemporaryDirectory() as tmp:  # S-ADT: DTS trees -> flow network -> draws from q
        buffer, flow = Path(tmp) / "trees.safetensors", Path(tmp) / "flow"
        train_contexts = [sdt.context_from_array(h, horizon=len(t)) for h, t in more]
        sdt.collect_buffer(buffer, prior, ["spectral"], train_contexts, sdt.SearchConfig(iterations=16, batch_size=8))
        small = sdt.AmortizeConfig(steps=30, eval_every=15, batch_size=8, hidden=32, val_samples=2)  # seconds
        summary = sdt.train_flow([buffer], prior, ["spectral"], flow, cfg=small)
        result = sdt.generate(prior, context, reward="spectral", method="sadt-sample", flow=str(flow), samples=8)
        print(f"flow network: best at step {summary['best_step']}; sadt-sample spent {result.forward_tokens} forward tokens "
              f"for {len(result.samples)} samples")
    return None


if __name__ == "__main__":
    sys.exit(main())

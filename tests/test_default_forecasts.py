"""The embedded default prior as a forecaster (issue 14) on the results tables' evaluation
windows (ETTh1 and ETTh2 OT h24, M4 Hourly h48): greedy decoding never writes a value outside
[min - range, max + range] of its history."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from specdifftree.experiments.config import DatasetSpec
from specdifftree.experiments.datasets import windows
from specdifftree.experiments.metrics import forecast_record
from specdifftree.problem import build_problem
from specdifftree.search.registry import run_search
from specdifftree.search.common import SearchConfig

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DATASETS = {
    "ETTh1": DatasetSpec(name="ETTh1-OT-h24", source="ett", file="ett/ETTh1.csv", column="OT", horizon=24,
                         context_length=96, windows=12),
    "ETTh2": DatasetSpec(name="ETTh2-OT-h24", source="ett", file="ett/ETTh2.csv", column="OT", horizon=24,
                         context_length=96, windows=12),
    "M4": DatasetSpec(name="M4-Hourly-h48", source="m4", horizon=48, context_length=192, windows=12),
}
# The tables' evaluation windows (S-ADT.md): every window of ETTh1 and ETTh2, every third of M4 (48
# steps each). The default backbone is the packaged one, so every machine decodes the same weights.
CASES = [(name, i) for name in ("ETTh1", "ETTh2") for i in range(12)] + [("M4", i) for i in range(0, 12, 3)]


@pytest.mark.parametrize("name,index", CASES)
def test_greedy_stays_within_the_history_range(name, index):
    spec = DATASETS[name]
    w = windows(spec, DATA)[index]
    context = w.context(spec)
    problem, _ = build_problem("default", ["spectral"], context)
    result = run_search(problem, "greedy", SearchConfig(samples=1))
    samples, _ = forecast_record(result, context)
    values = np.asarray(samples[0]["values"])
    lo, hi = w.history.min(), w.history.max()
    span = hi - lo
    assert len(values) == spec.horizon
    assert np.all((values >= lo - span) & (values <= hi + span)), (
        f"window {w.key}: greedy wrote {values.round(2).tolist()} outside "
        f"[{lo - span:.2f}, {hi + span:.2f}] (history range [{lo:.2f}, {hi:.2f}])")

"""The text table: experiment datasets with task caption|qa, their held-out windows, text metrics,
buffers of text searches, the table with gains over sampling, and a small grid end to end."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from specdifftree.errors import SDTError
from specdifftree.experiments.config import DatasetSpec, load_experiment

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "experiments" / "text_table.yaml"
DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "ett" / "ETTh1.csv").is_file() or not (DATA / "m4").is_dir()
                                or not (DATA / "har_chest_acc" / "6.csv").is_file(),
                                reason="needs ../shared/data (ETT, M4, har_chest_acc) beside the checkout")
QA = dict(source="har", task="qa", context_length=256, question="What is the person doing?",
          choices="walking,standing,sitting,stairs")
METHODS = ["greedy", "sample", "dts", "dts-star", "best-of-n", "smc"]


# --------------------------------------------------------------------------------------- config


def test_text_table_and_its_presets_load():
    table = load_experiment(TABLE)
    assert [m.name for m in table.methods][:6] == METHODS
    assert {d.task for d in table.datasets} == {"caption"} and table.reward == ["caption-consistency"]
    assert {d.source for d in table.datasets} == {"ett", "m4"} and all(d.part == "eval" for d in table.datasets)
    sadt = load_experiment(TABLE, "sadt")
    scale = {m.name: m.budget_scale for m in sadt.methods}
    assert scale["sadt"] <= 0.1 and scale["sadt-sample"] <= 0.1 and scale["dts"] == 1.0  # a tenth of DTS's tokens
    assert sadt.flow["datasets"] == ["ETTh1-caption"] and sadt.flow["amortize"]["on_policy"] == 0.0
    qa = load_experiment(TABLE, "qa")
    assert [d.name for d in qa.datasets] == ["HAR-qa"] and qa.reward == ["answer-consistency"]
    assert qa.datasets[0].choices == "walking,standing,sitting,stairs"
    for preset in ("smoke", "qa-smoke"):
        cfg = load_experiment(TABLE, preset)
        assert cfg.seeds == [0] and all(d.windows <= 2 for d in cfg.datasets), preset


@pytest.mark.parametrize("spec, why", [
    (dict(source="ett", file="ett/ETTh1.csv", task="caption", horizon=24), "remove horizon"),
    (dict(source="ett", file="ett/ETTh1.csv", task="summary"), "task must be one of"),
    (dict(source="har", task="qa", question="What?"), "task qa needs choices"),
    (dict(source="har", task="qa", choices="a,b"), "needs question"),
    (dict(source="m4", task="caption", variant="most"), "variant must be one of"),
    (dict(source="m4", task="caption", question="What?"), "belong to task qa"),
    (dict(source="har", horizon=24), "text tasks only"),
    (dict(source="m4", task="caption", windows=0), "windows must be an integer >= 1"),
])
def test_text_datasets_are_checked(spec, why):
    with pytest.raises(SDTError, match=why):
        DatasetSpec("d", **spec).validate()


def test_forecast_datasets_unchanged():
    spec = DatasetSpec("e", "ett", horizon=24, file="ett/ETTh1.csv").validate()
    assert spec.task == "forecast"
    with pytest.raises(SDTError, match="horizon must be a positive integer"):
        DatasetSpec("e", "ett", file="ett/ETTh1.csv").validate()  # a forecast still needs its horizon


# --------------------------------------------------------------------------------------- windows


@needs_data
def test_qa_windows_are_split_by_participant_and_labelled():
    from specdifftree.data.splits import ett_range
    from specdifftree.data.sources import read_accelerometer
    from specdifftree.data.tasks import ACCEL_CHOICES
    from specdifftree.experiments.datasets import windows

    spec = DatasetSpec("q", **QA, windows=8).validate()
    parts = {part: windows(spec, DATA, part, 8) for part in ("eval", "val", "flow-train")}
    assert {w.file.stem for w in parts["eval"]} == {"6"} and {w.file.stem for w in parts["val"]} == {"5"}
    assert {w.file.stem for w in parts["flow-train"]} <= {"1", "2", "3", "4"}
    labels = []
    for w in parts["eval"]:
        rec = read_accelerometer(w.file)
        start = w.end - spec.context_length
        lab = rec.labels[start:w.end]
        assert (lab == lab[0]).all()  # one documented activity throughout
        runs = np.flatnonzero(np.diff(rec.labels)) + 1
        lo = runs[runs <= start].max(initial=0)
        hi = runs[runs > start].min(initial=len(rec.labels))
        assert start >= lo + ett_range(hi - lo, "eval")[0]  # inside the run's last 20%: no prior saw it
        ctx = w.context(spec)
        assert ctx.task.truth.label == ACCEL_CHOICES[int(lab[0])] and len(ctx.covariates) == 2
        assert ctx.task.fs == 52.0 and ctx.meta["dataset"] == "q"
        labels.append(ctx.task.truth.label)
    assert set(labels) == {"walking", "standing", "sitting", "stairs"}  # every choice is asked
    assert len({w.key for w in parts["eval"]}) == len(parts["eval"])


@needs_data
def test_caption_windows_are_the_forecast_windows_held_out_parts():
    from specdifftree.experiments.datasets import windows

    ett = DatasetSpec("e", "ett", file="ett/ETTh1.csv", task="caption", windows=3).validate()
    forecast = DatasetSpec("f", "ett", file="ett/ETTh1.csv", horizon=1, windows=3).validate()
    got, want = windows(ett, DATA), windows(forecast, DATA)
    assert [w.key for w in got] == [w.key for w in want]
    ctx = got[0].context(ett)
    assert ctx.task.name == "caption" and ctx.task.names == ("the series",) and ctx.horizon is None
    assert np.array_equal(ctx.series, want[0].history) and got[0].target is None
    m4 = DatasetSpec("m", "m4", task="caption", windows=2).validate()
    wins = windows(m4, DATA)
    assert [w.key for w in wins] == [w.key for w in windows(DatasetSpec("m", "m4", horizon=48, windows=2), DATA)]
    assert wins[0].context(m4).task.name == "caption" and len(wins[0].history) == 96


# --------------------------------------------------------------------------------------- metrics


class _Sample:
    def __init__(self, text, reward):
        self.text, self.reward = text, reward

    def to_dict(self):
        return {"tokens": [], "text": self.text, "reward": self.reward}


class _Result:
    def __init__(self, texts, rewards):
        self.samples = [_Sample(t, r) for t, r in zip(texts, rewards)]

    def stats(self):
        return {"forward_tokens": 100, "model_calls": 3, "wall_s": 0.1, "tree_nodes": 7}


def test_score_window_reads_captions_and_answers():
    from specdifftree.data.captions import caption_series
    from specdifftree.data.context import context_from_array
    from specdifftree.data.tasks import captioned
    from specdifftree.experiments.text_windows import score_window, window_samples

    x = np.sin(np.arange(96) / 4) * 10 + np.arange(96) * 0.5
    cap = context_from_array(x, task="caption")
    spec = DatasetSpec("c", "m4", task="caption").validate()
    good = caption_series(captioned(cap), seed=0).text("middle+low", 240)
    samples, m = score_window(_Result([good, "The series is flat."], [1.0, 0.0]), cap, None, spec)
    assert m["fact_accuracy_low"] == pytest.approx(0.5) and m["reward"] == 0.5 and m["reward_max"] == 1.0
    assert m["distinct"] == 1.0 and m["forward_tokens"] == 100 and "accuracy" not in m
    kept = window_samples(samples)
    assert kept[0]["text"] == good and kept[0]["fact_accuracy"]["low"] == 1.0 and kept[0]["values"] == []
    qa = context_from_array(x, task="qa", question="Which way?", choices="up,down", label="up")
    spec = DatasetSpec("q", **{**QA, "question": "Which way?", "choices": "up,down"}).validate()
    _, m = score_window(_Result(["Rising. Answer: up", "Answer: down", "no answer"], [1, 0, -1]), qa, None, spec)
    assert m["accuracy"] == pytest.approx(1 / 3) and m["answered"] == pytest.approx(2 / 3)


def test_results_columns_gain_text_metrics_only_when_present():
    from specdifftree.experiments.runner import RESULT_COLUMNS
    from specdifftree.experiments.text_windows import result_columns

    assert result_columns(RESULT_COLUMNS, [{"reward": 1.0}]) == list(RESULT_COLUMNS)  # forecast tables unchanged
    cols = result_columns(RESULT_COLUMNS, [{"fact_accuracy_low": 0.5, "accuracy": math.nan}])
    assert "fact_accuracy_low" in cols and "accuracy" not in cols
    assert cols.index("tree_nodes") < cols.index("fact_accuracy_low") < cols.index("backbone_sha256")


def test_text_table_pairs_gains_by_seed_and_window(tmp_path):
    from specdifftree.experiments.text_report import aggregate, text_comparison

    def record(method, seed, values, tokens):
        wins = [{"window": f"w{i}", "metrics": {"fact_accuracy_low": v, "reward": v, "forward_tokens": tokens}}
                for i, v in enumerate(values)]
        return {"cell": {"dataset": "d", "method": method, "budget": 100, "seed": seed}, "windows": wins,
                "metrics": {"fact_accuracy_low": float(np.mean(values))}}

    records = [record("sample", s, [0.1, 0.3], 100) for s in (0, 1)]
    records += [record("dts", s, [0.5, 0.9], 100) for s in (0, 1)]
    records += [record("sadt", s, [0.4, 0.7], 8) for s in (0, 1)]
    rows = {r["method"]: r for r in aggregate(records)}
    assert rows["dts"]["units"] == 4 and rows["dts"]["gain_fact_accuracy_low"] == pytest.approx(0.5)
    assert rows["dts"]["gain_fact_accuracy_low_se"] == pytest.approx(np.std([0.4, 0.6, 0.4, 0.6], ddof=1) / 2)
    assert rows["sadt"]["share_of_dts_gain"] == pytest.approx(0.35 / 0.5)
    assert rows["sadt"]["share_of_dts_tokens"] == pytest.approx(0.08)
    text, _, plots = text_comparison(records, tmp_path)
    assert "70.0%" in text and "8.0%" in text and (tmp_path / "table.md").is_file()
    assert all(p.stat().st_size > 0 for p in plots.values())


# --------------------------------------------------------------------------------------- buffers


def test_a_text_context_survives_the_buffer(tmp_path):
    from specdifftree.amortize.buffer import Record, context_record
    from specdifftree.data.context import context_from_array

    xyz = np.random.default_rng(0).normal(size=(3, 64))
    ctx = context_from_array(xyz[0], covariates=[xyz[1], xyz[2]], task="qa", fs=52.0, question="What?",
                             choices="walking,sitting", label="sitting", names=["x", "y", "z"])
    rec = json.loads(json.dumps(context_record(ctx)))
    assert "truth" not in rec["task"] and "sitting" not in json.dumps({k: v for k, v in rec.items() if k != "task"})
    back = Record(context=rec, actions=np.zeros((0, 0), np.int64), logp=np.zeros((0, 0)), values=np.zeros((0, 1)),
                  visits=np.zeros((0, 1), np.int64), reward=np.zeros(0), tree_logq=np.zeros(0)).query()
    assert back.task.name == "qa" and back.task.choices == ("walking", "sitting") and back.task.fs == 52.0
    assert back.task.names == ctx.task.names and back.task.truth.label is None and back.horizon is None
    assert np.array_equal(back.covariates[1], ctx.covariates[1]) and back.codec is None
    from specdifftree.data.tasks import text_prompt

    assert text_prompt(back) == text_prompt(ctx)  # the prior sees the same query

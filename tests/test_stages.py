"""Curriculum stage datasets (data/stages.py): structure, determinism, balance, splits, labels."""

import re
from collections import Counter

import numpy as np
import pytest

from specdifftree.data.example import STAGES
from specdifftree.data.prompts import forecast_codec, forecast_prompt
from specdifftree.data.splits import ett_range, m4_is_eval
from specdifftree.data.stages import OPTIONS, STAGE2_CAP, build_stage, parse_label
from specdifftree.paths import default_data_dir
from specdifftree.errors import SDTError

DATA = default_data_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="shared/data is not present")


def _key(e):
    return (e.prompt(), e.answer, tuple(np.asarray(x).tobytes() for x in e.series))


@pytest.mark.parametrize("stage", STAGES)
def test_stage_examples_are_well_formed_and_deterministic(stage):
    n = 20
    ex = build_stage(stage, "train", n, seed=1, context_length=32, horizon=8)
    assert len(ex) == n and all(e.stage == stage for e in ex)
    assert [_key(e) for e in ex] == [_key(e) for e in build_stage(stage, "train", n, seed=1, context_length=32, horizon=8)]
    other = build_stage(stage, "val", n, seed=1, context_length=32, horizon=8)
    assert not {_key(e) for e in ex} & {_key(e) for e in other}  # splits draw different series
    for e in ex:
        assert len(e.series) == len(e.names) >= 1
        assert all(len(x) >= 4 and np.isfinite(x).all() for x in e.series)
        cap = STAGE2_CAP if stage == "stage2_captioning" else 160  # short answers: training cost grows with them
        assert 0 < len(e.answer) <= cap and "\n" not in e.answer
        prompt = e.prompt()
        for name, x in zip(e.names, e.series):
            assert name in prompt
        if stage == "stage6_forecast":
            assert e.text == prompt
        else:
            assert prompt.startswith(e.pre_prompt) and prompt.endswith(e.post_prompt)
            assert re.search(r"it has mean \S+ and std \S+\.", prompt)


@pytest.mark.parametrize("stage", sorted(OPTIONS))
def test_labels_are_balanced_and_parse_back(stage):
    ex = build_stage(stage, "test", 60, seed=0, context_length=48)
    counts = Counter(e.label for e in ex)
    k = len(OPTIONS[stage])
    assert set(counts) == set(OPTIONS[stage]) and max(counts.values()) - min(counts.values()) <= 1
    assert all(e.options == OPTIONS[stage] for e in ex) and k >= 3
    assert all(parse_label(stage, e.answer) == e.label for e in ex)


def test_mcq_answer_is_the_option_that_matches_the_series():
    ex = build_stage("stage1_mcq", "train", 60, seed=2)
    for e in ex:
        listed = re.search(r"Options: (.+)", e.post_prompt).group(1).split("; ")
        assert tuple(listed) == e.options and len(set(listed)) == 3
        assert e.label == e.meta["correct"] in listed
        assert parse_label("stage1_mcq", e.answer, e.options) == e.label
    positions = Counter(e.options.index(e.label) for e in ex)
    assert len(positions) == 3  # the correct option is not always in the same place


def test_stage6_uses_the_search_prompt():
    for e in build_stage("stage6_forecast", "val", 10, seed=0, horizon=12, context_length=40):
        history = e.series[0]
        codec = forecast_codec(history)
        assert len(history) == 40 and e.text == forecast_prompt(history, 12, codec)
        future = np.asarray(e.meta["future"])
        assert len(future) == 12 and codec.encode(future) == e.answer
        assert np.allclose(codec.decode(e.answer).values, future, atol=codec.scale)


def test_parse_label_forms():
    opts = ("upward", "flat", "downward")
    assert parse_label("stage1_mcq", "The line rises. Answer: upward", opts) == "upward"
    assert parse_label("stage1_mcq", "Answer: (Flat).", opts) == "flat"
    assert parse_label("stage1_mcq", "Answer: sideways", opts) is None  # not an option
    assert parse_label("stage3_cot", "Rhythm 2 Hz.\nAnswer: Walking") == "walking"
    assert parse_label("stage3_cot", "Answer: walking fast") is None
    assert parse_label("stage3_cot", "no answer here") is None
    assert parse_label("stage2_captioning", "Answer: up") is None
    upstream = ("Wake", "Non-REM stage 2")
    assert parse_label("stage4_sleep_cot", "... Answer: non-rem stage 2.", upstream) == "Non-REM stage 2"


def test_bad_arguments():
    with pytest.raises(SDTError, match="unknown stage"):
        build_stage("stage9", "train", 1)
    with pytest.raises(SDTError, match="unknown split"):
        build_stage("stage1_mcq", "dev", 1)
    with pytest.raises(SDTError, match="context_length"):
        build_stage("stage1_mcq", "train", 1, context_length=8)


def _rows(source):
    name, a, b = re.fullmatch(r"(.+)\[(\d+):(\d+)\]", source).groups()
    return name, int(a), int(b)


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("split,part", [("train", "prior"), ("val", "flow"), ("test", "eval")])
def test_real_windows_follow_the_splits(split, part):
    """ETT windows stay inside their time part, M4 windows inside their series group (and, for
    train / val, inside the first 60% / last 40% of the row), accelerometer and ECG windows in
    their part of each recording."""
    from specdifftree.data.sources import read_m4

    ids = {s.id: (i, len(s.values)) for i, s in enumerate(read_m4(DATA / "m4" / "Hourly-train.csv"))}
    seen = Counter()
    for stage in ("stage1_mcq", "stage2_captioning", "stage6_forecast", "stage3_cot", "stage5_ecg_cot"):
        for e in build_stage(stage, split, 48, seed=0, data_dir=DATA):
            if e.meta["source"] == "synthetic":
                continue
            name, a, b = _rows(e.meta["source"])
            if name.startswith("ETT"):
                lo, hi = ett_range(17420, part)
                assert lo <= a < b <= hi, (e.meta["source"], part)
            elif name.startswith("M4:"):
                i, length = ids[name[3:]]
                assert m4_is_eval(i) == (split == "test")
                cut = ett_range(length, "prior")[1]
                assert (b <= cut) if split == "train" else (a >= cut) if split == "val" else True
            seen["ETT" if name.startswith("ETT") else name[:2]] += 1
    assert {"ETT", "M4"} <= set(seen)


@needs_data
def test_real_data_mix_and_labels():
    har = build_stage("stage3_cot", "train", 40, seed=0, data_dir=DATA)
    real = [e for e in har if e.meta["source"] != "synthetic"]
    assert 8 <= len(real) <= 32 and all(e.series[0].mean() > 1000 for e in real)  # raw ADC counts
    ecg = build_stage("stage5_ecg_cot", "train", 40, seed=0, data_dir=DATA)
    real = [e for e in ecg if e.meta["source"] != "synthetic"]
    assert real and {e.label for e in real} <= {"normal", "premature"}  # record 100: sinus rhythm + ectopic beats
    assert all(parse_label("stage5_ecg_cot", e.answer) == e.label for e in ecg)


def test_user_csv_folder_and_bad_data(tmp_path):
    t = np.arange(400)
    (tmp_path / "load.csv").write_text("time,kw\n" + "".join(f"t{i},{100 + 10 * np.sin(i / 4):.3f}\n" for i in t))
    ex = build_stage("stage6_forecast", "test", 30, data_dir=tmp_path, context_length=32, horizon=8)
    real = [e for e in ex if e.meta["source"] != "synthetic"]
    assert real and all(e.meta["source"].startswith("load.csv:kw[") for e in real)
    lo, hi = ett_range(400, "eval")
    assert all(lo <= _rows(e.meta["source"])[1] and _rows(e.meta["source"])[2] <= hi for e in real)

    cases = {"time,kw\nt0,1\nt1,2\nt2,nan\nt3,4\n": "bad.csv: row 4, column 'kw'",
             "time,kw\nt0,1\nt1,2\n": "bad.csv: 2 data rows; at least 4"}
    for text, needle in cases.items():
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(SDTError, match=needle) as e:
            build_stage("stage2_captioning", "val", 20, seed=3, data_dir=tmp_path)
        assert "\n" not in str(e.value)
    (tmp_path / "bad.csv").unlink()
    (tmp_path / "ett").mkdir()
    (tmp_path / "ett" / "ETTh1.csv").write_text("when,OT\n1,2\n")
    with pytest.raises(SDTError, match="ETTh1.csv: row 1: expected the ETT header"):
        build_stage("stage6_forecast", "train", 20, seed=4, data_dir=tmp_path)
    with pytest.raises(SDTError, match="data directory not found"):
        build_stage("stage6_forecast", "train", 2, data_dir=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SDTError, match="holds none of"):
        build_stage("stage6_forecast", "train", 2, data_dir=tmp_path / "empty")


def test_stage2_captions_mix_variants_and_carry_their_facts():
    from specdifftree.data.captions import UNLABELLED_VARIANTS, Fact, score_caption

    ex = build_stage("stage2_captioning", "train", 30, seed=0, data_dir=DATA)
    assert {e.meta["variant"] for e in ex} == set(UNLABELLED_VARIANTS)
    for e in ex:
        facts = [Fact.from_dict(f) for f in e.meta["facts"]]
        levels = {f.level for f in facts}
        assert levels == {"low": {1}, "middle": {2}, "middle+low": {1, 2}}[e.meta["variant"]]
        scores = score_caption(e.answer, facts)  # the gold caption states its facts exactly
        assert all(v == 1.0 for v in scores.values() if v is not None)

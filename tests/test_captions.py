"""Hierarchical captions (data/captions/): known answers on constructed series, determinism,
NaN gaps, variants, fact parsing and scoring, labels, and fuzzing."""

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specdifftree.data.captions import (VARIANTS, Captioned, beat_events, caption, caption_series,
                                        find_spikes, find_trends, label_runs, parse_facts, printed_tolerance,
                                        score_caption, sleep_periods)
from specdifftree.paths import default_data_dir
from specdifftree.errors import SDTError


def _ramp(n=120, lo=40, hi=80, noise=0.02, seed=0):
    x = np.zeros(n)
    x[lo:hi] = np.linspace(0, 1, hi - lo)
    x[hi:] = 1
    return x + np.random.default_rng(seed).normal(0, noise, n)


def _iou(a, b, c, d):
    return max(0, min(b, d) - max(a, c)) / (max(b, d) - min(a, c))


@pytest.mark.parametrize("seed", range(5))
def test_a_ramp_is_one_increasing_trend_over_its_span(seed):
    trends = find_trends(_ramp(seed=seed))
    assert len(trends) == 1 and trends[0].direction == "increasing"
    assert _iou(trends[0].start, trends[0].end, 40, 80) >= 0.8


def test_a_ramp_in_a_long_series_and_a_fall():
    x = -_ramp(n=1200, lo=400, hi=800, seed=3)
    (t,) = find_trends(x)
    assert t.direction == "decreasing" and _iou(t.start, t.end, 400, 800) >= 0.8


def test_planted_spikes_are_all_found_and_none_elsewhere():
    rng = np.random.default_rng(0)
    x = np.sin(np.arange(600) / 15) * 0.2 + rng.normal(0, 0.05, 600)
    where = [70, 333, 512]
    x[where] += [3.0, 2.5, 3.5]
    assert sorted(find_spikes(x).tolist()) == where
    text = caption(x, "middle", seed=0)
    assert sorted(int(m) for m in re.findall(r"at point (\d+)", text)) == where


def test_level1_numbers_equal_numpy_to_the_printed_precision():
    rng = np.random.default_rng(1)
    for scale in (1e-3, 1.0, 70.0, 5e4):
        hr = scale * (7 + rng.standard_normal(500))
        for seed in range(3):  # every statistics template
            text = caption_series(Captioned.build({"heart rate": hr}, units={"heart rate": "bpm"}), seed=seed).text("low")
            assert "heart rate (bpm)" in text.lower()
            printed = dict(zip(("mean", "max", "min", "std"), _numbers_in_stat_order(text)))
            for key, ref in {"mean": hr.mean(), "max": hr.max(), "min": hr.min(), "std": hr.std()}.items():
                assert abs(float(printed[key]) - ref) <= printed_tolerance(printed[key]), (key, text)


def _numbers_in_stat_order(text):
    """The printed strings of mean, max, min, std, whatever template stated them."""
    nums = re.findall(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?", text)
    facts = parse_facts(text)[:4]
    by_value = {}
    for s in nums:
        by_value.setdefault(float(s), s)
    return [by_value[f.start] for f in facts]


def test_nan_gaps_are_ignored():
    rng = np.random.default_rng(2)
    x = rng.normal(5, 1, 300)
    y = x.copy()
    y[50:90] = np.nan
    y[200] = np.nan
    facts = {f.key: f.start for f in parse_facts(caption(y, "low"))}
    ok = x[np.isfinite(y)]
    assert facts["mean"] == pytest.approx(ok.mean(), abs=0.005) and facts["max"] == pytest.approx(ok.max(), abs=0.005)
    assert caption(y, "middle")  # structural level also copes with the gap


def test_same_seed_same_captions_and_seeds_vary_the_templates():
    x = _ramp(n=300, lo=100, hi=200)
    assert caption(x, "all", seed=5) == caption(x, "all", seed=5)
    texts = {caption(x, "middle+low", seed=s) for s in range(12)}
    assert len(texts) > 1
    assert all(score_caption(t, caption_series(Captioned.build(x), seed=s).facts("middle+low"))["low"] == 1.0
               for s, t in enumerate(sorted(texts)[:1]))


def test_time_is_written_in_the_series_unit():
    x = _ramp(n=1440, lo=480, hi=960)
    assert "minute" in caption(x, "middle", fs=1 / 60)
    assert "point" in caption(x, "middle")
    assert "hour" in caption(x, "middle", fs=1 / 3600) or "hour" in caption(np.r_[x, x], "middle", fs=1 / 60)
    assert "second" in caption(x[:200], "middle", fs=52.0)


def test_every_variant_respects_its_cap_and_levels():
    x = {f"ch{i}": _ramp(n=500, lo=100 + 20 * i, hi=300, seed=i) for i in range(6)}
    labels = np.repeat([1, 4, 3], [100, 250, 150])
    s = Captioned.build(x, fs=1.0, events=label_runs(labels, {1: "sitting", 4: "walking", 3: "standing"}, 1.0))
    c = caption_series(s, seed=0)
    assert set(c.available()) == set(VARIANTS)
    for v, (_, cap) in VARIANTS.items():
        sentences = c.sentences(v)
        assert sentences and (len(c.text(v)) <= cap or len(sentences) == len({p for p in VARIANTS[v][0]}))
    assert "Walking was detected" in c.text("high") or "the activity was walking" in c.text("high")


def test_without_labels_level3_is_empty():
    c = caption_series(Captioned.build(_ramp()), seed=0)
    assert c.text("high-all") == "" and "high-all" not in c.available() and "middle+low" in c.available()


def test_score_caption_counts_missing_and_invented_facts():
    x = _ramp(n=400, lo=100, hi=260)
    x[330] += 4
    c = caption_series(Captioned.build({"hr": x}), seed=0)
    ref = c.facts("middle+low")
    assert score_caption(c.text("middle+low"), ref) == {"low": 1.0, "middle": 1.0, "high": None}
    assert score_caption("", ref)["low"] == 0.0 and score_caption("", ref)["middle"] == 0.0
    wrong = c.text("middle+low").replace("increasing", "decreasing").replace("rises", "falls")
    assert score_caption(wrong, ref)["middle"] < 1.0
    extra = c.text("middle") + " A spike is detected for hr at point 20."
    assert 0 < score_caption(extra, ref)["middle"] < 1.0


def test_printed_tolerance():
    assert printed_tolerance("72.3") == pytest.approx(0.05)
    assert printed_tolerance("1502") == pytest.approx(0.5)
    assert printed_tolerance("1.5e+03") == pytest.approx(50)


def test_label_events():
    labels = np.r_[np.zeros(30), np.full(200, 4), np.full(5, 3), np.full(100, 1)].astype(int)
    events = label_runs(labels, {4: "walking", 3: "standing", 1: "sitting"}, fs=10.0, min_seconds=1.0)
    assert [(e.label, e.start, e.end) for e in events] == [("walking", 30, 230), ("sitting", 235, 335)]
    sleep = sleep_periods(["wake"] * 10 + ["n2"] * 50 + ["wake"] * 5 + ["rem"] * 30 + ["n3"] * 70, fs=1.0, min_seconds=20)
    assert [(e.start, e.end) for e in sleep] == [(10, 60), (65, 165)] and sleep[1].label == "mostly n3"
    beats = beat_events(np.array([10, 20, 30]), ["N", "A", "V"])
    assert [(e.label, e.start) for e in beats] == [("atrial premature", 20), ("premature ventricular", 30)]
    c = caption_series(Captioned.build(np.zeros(40), fs=10.0, events=beats), seed=0)
    assert "An atrial premature beat was annotated at second 2." in c.text("high")


@pytest.mark.parametrize("bad", [[], {}, {"a": [1, 2], "b": [1]}, [np.nan, np.nan], [[1, 2], [3, 4]]])
def test_uncaptionable_input_is_a_clear_error(bad):
    with pytest.raises(SDTError):
        Captioned.build(bad)


def test_bad_fs_and_variant():
    with pytest.raises(SDTError):
        Captioned.build([1.0, 2.0], fs=0)
    with pytest.raises(SDTError, match="unknown caption level"):
        caption_series(Captioned.build([1.0, 2.0])).text("loud")


_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.floats(-1e-300, 1e-300), st.floats(-1e300, 1e300), st.just(float("nan")))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_values, min_size=0, max_size=300), st.integers(0, 3), st.sampled_from([None, 1.0, 52.0, 1 / 60]))
def test_fuzz_never_raises_except_sdterror(values, seed, fs):
    try:
        s = Captioned.build({"x": values}, fs=fs)
    except SDTError:
        return
    c = caption_series(s, seed=seed)
    for v in VARIANTS:
        score_caption(c.text(v), c.facts(v))


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(["constant", "tiny", "huge", "nan-laden", "long"]), st.integers(0, 100))
def test_fuzz_families(kind, seed):
    rng = np.random.default_rng(seed)
    x = {"constant": np.full(50, 3.0), "tiny": rng.normal(0, 1e-12, 80), "huge": rng.normal(0, 1e15, 80),
         "nan-laden": np.where(rng.random(200) < 0.8, np.nan, rng.normal(size=200)),
         "long": np.cumsum(rng.normal(size=300_000))}[kind]
    c = caption_series(Captioned.build(x), seed=seed)
    text = c.text("all")
    assert text and score_caption(text, c.facts("all"))["low"] == 1.0


# --------------------------------------------------------------------------- sdt caption

def test_cli_caption_csv_levels_and_json(tmp_path, run_cli):
    path = tmp_path / "s.csv"
    x = _ramp(n=200, lo=50, hi=150)
    path.write_text("hr,act\n" + "".join(f"{v},{'walk' if i >= 100 else 'sit'}\n" for i, v in enumerate(x)))
    code, out, err = run_cli(["caption", path, "--column", "hr", "--label-column", "act"])
    assert code == 0, err
    assert "level 1 (statistical): " in out and re.search("increasing|rises", out) and "Walk" in out
    code, out, err = run_cli(["caption", path, "--column", "hr", "--level", "low", "--json"])
    import json

    assert code == 0, err
    data = json.loads(out)
    assert list(data["captions"]) == ["low"] and {f["key"] for f in data["facts"]["low"]} == {"mean", "max", "min", "std"}
    code, _, _ = run_cli(["caption", path, "--column", "nope"])
    assert code != 0


@pytest.mark.skipif(default_data_dir() is None, reason="shared/data is not present")
def test_cli_caption_har_file_has_three_axes_and_activity_spans(run_cli):
    code, out, err = run_cli(["caption", default_data_dir() / "har_chest_acc" / "1.csv"])
    assert code == 0, err
    lines = out.splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["level 1 (statistical)", "level 2 (structural)", "level 3 (semantic)"]
    assert all(f"{a}-axis acceleration (adc counts)" in lines[0].lower() for a in "xyz")
    assert "walking" in lines[2] and "minute" in lines[2]

"""Series sources (data/sources.py, data/series.py) and seeded generators (data/synthetic.py)."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specdifftree.data import synthetic
from specdifftree.data.features import dominant_period, spike_word, trend_word
from specdifftree.data.series import read_csv_columns
from specdifftree.data.sources import read_accelerometer, read_ett, read_m4, read_wfdb
from specdifftree.paths import default_data_dir
from specdifftree.errors import SDTError

DATA = default_data_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="shared/data is not present")
finite = st.floats(allow_nan=False, allow_infinity=False, width=64, min_value=-1e12, max_value=1e12)
HYP = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _write(path, text):
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- generic CSV and ETT


def test_read_ett_fixture_and_errors(tmp_path):
    ok = _write(tmp_path / "ett.csv", "date,HUFL,OT\n2016-07-01 00:00:00,1.5,30\n2016-07-01 01:00:00,2,31\n"
                                      "2016-07-01 02:00:00,2.5,32\n2016-07-01 03:00:00,3,33\n")
    cols = read_ett(ok)
    assert list(cols) == ["HUFL", "OT"] and cols["OT"].tolist() == [30, 31, 32, 33]
    assert list(read_ett(ok, ["OT"])) == ["OT"]
    cases = {
        "a,b\n1,2\n": "row 1",  # wrong header
        "date,OT\nx,1\nx,2\nx,nan\nx,4\n": "row 4",  # NaN names its row
        "date,OT\nx,1\nx,2\nx,abc\nx,4\n": "row 4",
        "date,OT\nx,1\nx,2\n": "at least 4",  # shorter than a patch
    }
    for text, needle in cases.items():
        with pytest.raises(SDTError, match=needle) as e:
            read_ett(_write(tmp_path / "bad.csv", text))
        assert "bad.csv" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SDTError, match="no column 'XX'"):
        read_ett(ok, ["XX"])
    with pytest.raises(SDTError, match="not found"):
        read_ett(tmp_path / "missing.csv")


@needs_data
def test_read_ett_real():
    cols = read_ett(DATA / "ett" / "ETTh1.csv")
    assert list(cols) == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    assert all(len(v) == 17420 for v in cols.values())


@HYP
@given(st.lists(st.lists(finite, min_size=2, max_size=2), min_size=1, max_size=30))
def test_read_csv_columns_round_trip(tmp_path, rows):
    path = _write(tmp_path / "t.csv", "a,b\n" + "".join(f"{x!r},{y!r}\n" for x, y in rows))
    cols = read_csv_columns(path)
    assert cols["a"].tolist() == [r[0] for r in rows] and cols["b"].tolist() == [r[1] for r in rows]


@HYP
@given(st.lists(finite, min_size=1, max_size=10), st.integers(0, 9),
       st.sampled_from(["", "nan", "inf", "x", "1e", "--1", "1,5"]))
def test_read_csv_columns_bad_cell_names_its_row(tmp_path, values, at, bad):
    at = at % len(values)
    cells = [repr(v) for v in values]
    cells[at] = f'"{bad}"' if "," in bad else bad
    path = _write(tmp_path / "t.csv", "v,w\n" + "".join(f"{c},1\n" for c in cells))
    with pytest.raises(SDTError, match=f"row {at + 2}, column 'v'"):
        read_csv_columns(path, ["v"])
    assert read_csv_columns(path, ["w"])["w"].tolist() == [1.0] * len(values)


# --------------------------------------------------------------------------- M4


def _m4_csv(rows, ids=None):
    width = max(len(r) for r in rows) + 1
    head = ",".join(f'"V{j + 1}"' for j in range(width))
    lines = [head]
    for i, r in enumerate(rows):
        sid = ids[i] if ids else f"H{i + 1}"
        cells = [f'"{sid}"'] + [repr(v) for v in r] + [""] * (width - 1 - len(r))
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


@HYP
@given(st.lists(st.lists(finite, min_size=4, max_size=20), min_size=1, max_size=6),
       st.lists(finite, min_size=4, max_size=8))
def test_read_m4_round_trip(tmp_path, rows, future):
    train = _write(tmp_path / "train.csv", _m4_csv(rows))
    test = _write(tmp_path / "test.csv", _m4_csv([future] * len(rows)))
    got = read_m4(train, test)
    assert [s.id for s in got] == [f"H{i + 1}" for i in range(len(rows))]
    for s, r in zip(got, rows):
        assert s.values.tolist() == r and s.test.tolist() == future
    assert all(s.test is None for s in read_m4(train))


def test_read_m4_errors(tmp_path):
    train = _write(tmp_path / "train.csv", _m4_csv([[1, 2, 3, 4, 5], [1, 2, 3, 4]]))
    cases = [
        (_m4_csv([[1, 2, 3, 4], [1, 2, 3]]), "row 3: series 'H2' has 3 values"),
        (_m4_csv([[1, 2, float("nan"), 4]]), "row 2, column 'V4'"),
        ('"V1","V2"\n"H1",1,2,3\n', "row 2: 4 cells"),
        ("id,x\nH1,1\n", "row 1"),
    ]
    for text, needle in cases:
        with pytest.raises(SDTError, match=needle):
            read_m4(_write(tmp_path / "bad.csv", text))
    with pytest.raises(SDTError, match="row 3: series 'X'"):
        read_m4(train, _write(tmp_path / "t.csv", _m4_csv([[1] * 4, [1] * 4], ids=["H1", "X"])))
    with pytest.raises(SDTError, match="1 series, but"):
        read_m4(train, _write(tmp_path / "t.csv", _m4_csv([[1] * 4])))
    with pytest.raises(SDTError, match="not found"):
        read_m4(tmp_path / "nope.csv")


@needs_data
def test_read_m4_real():
    got = read_m4(DATA / "m4" / "Hourly-train.csv", DATA / "m4" / "Hourly-test.csv")
    assert len(got) == 414 and got[0].id == "H1"
    assert all(700 <= len(s.values) <= 960 and len(s.test) == 48 for s in got)


# --------------------------------------------------------------------------- WFDB and accelerometer


@needs_data
def test_read_wfdb_real_records():
    rec = read_wfdb(DATA / "ecg" / "100")
    assert rec.fs == 360 and rec.leads == ["MLII", "V5"] and rec.signals.shape == (650000, 2)
    assert rec.beat_symbols.count("N") == 2239 and rec.beat_symbols.count("A") == 33
    mimic = read_wfdb(DATA / "ecg" / "03700181.hea")  # skewed RESP: the unfilled tail is dropped
    assert mimic.fs == 125 and np.isfinite(mimic.signals).all() and mimic.beat_samples is None


def test_read_wfdb_written_record_and_missing(tmp_path):
    import wfdb

    sig = np.stack([np.sin(np.arange(400) / 10), np.cos(np.arange(400) / 10)], axis=1)
    wfdb.wrsamp("rec", fs=250, units=["mV", "mV"], sig_name=["I", "II"], p_signal=sig, fmt=["16", "16"],
                write_dir=str(tmp_path))
    rec = read_wfdb(tmp_path / "rec")
    assert rec.fs == 250 and rec.leads == ["I", "II"] and np.allclose(rec.signals, sig, atol=1e-3)
    with pytest.raises(SDTError, match="WFDB header not found"):
        read_wfdb(tmp_path / "nothere")
    (tmp_path / "rec.dat").write_bytes(b"\x00")  # truncated signal file
    with pytest.raises(SDTError, match="rec.hea"):
        read_wfdb(tmp_path / "rec")


def test_read_accelerometer_layout_and_errors(tmp_path):
    # the upstream quirks: no header, seq in scientific notation, label 0, no final newline
    text = "99998,1502,2215,2153,1\n99999,1667,2072,2047,1\n1e+05,1611,1957,1906,4\n1.0001e+05,1601,1939,1831,0"
    acc = read_accelerometer(_write(tmp_path / "1.csv", text))
    assert acc.xyz.shape == (4, 3) and acc.labels.tolist() == [1, 1, 4, 0] and acc.xyz[2].tolist() == [1611, 1957, 1906]
    cases = {"1,2,3,4,1\n2,2,3,4\n3,2,3,4,1\n4,2,3,4,1\n": "row 2: 4 columns",
             "1,2,3,4,1\n2,2,nan,4,1\n3,2,3,4,1\n4,2,3,4,1\n": "row 2, column 'y'",
             "1,2,3,4,1\n2,2,3,4,1\n3,2,3,4,9\n4,2,3,4,1\n": "row 3: label 9",
             "1,2,3,4,1\n": "at least 4"}
    for body, needle in cases.items():
        with pytest.raises(SDTError, match=needle):
            read_accelerometer(_write(tmp_path / "bad.csv", body))


@needs_data
def test_read_accelerometer_real():
    acc = read_accelerometer(DATA / "har_chest_acc" / "3.csv")
    assert acc.xyz.shape == (102341, 3) and set(np.unique(acc.labels)) <= set(range(8))


# --------------------------------------------------------------------------- generators


def test_default_corpus_unchanged():
    """The synthetic part of the default corpus (the first 40 documents without real data) must not
    change unless DEFAULT_BACKBONE changes with it: tests/data/default_corpus_40.txt is its text on
    the machine that built the packaged backbone (rewrite the file together with a new backbone).

    Machines differ in the last bits of the generators' floats (numpy's float64 sin / exp / log and
    its sums take other SIMD paths on an AVX-512 CPU than on an AVX2 one), which moves a printed
    number by one in its last digit now and then, and changes the roundoff that a centred series
    prints as its mean ("mean -4.114e-15"). So the text must match character for character except
    numbers (read with their exponent); each number may differ by at most one unit of its last
    printed digit, and two numbers that are both roundoff of zero (under 1e-9, where the document's
    other numbers are hundreds) are equal. A change to the generators moves far more than that."""
    from specdifftree.data.corpus import generate_corpus

    want = (Path(__file__).parent / "data" / "default_corpus_40.txt").read_text()
    got = "".join(generate_corpus(40, seed=0, data=None))
    number = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]\d+)?")
    assert number.split(got) == number.split(want), "the corpus text changed (not only its numbers)"
    pairs = list(zip(number.findall(got), number.findall(want)))
    assert any("e-" in b for _, b in pairs)  # the roundoff case is in the recorded text
    for a, b in pairs:
        if abs(float(a)) < 1e-9 and abs(float(b)) < 1e-9:
            continue
        digits, _, exponent = b.partition("e")
        unit = 10.0 ** (int(exponent or 0) - len(digits.partition(".")[2]))
        assert abs(float(a) - float(b)) <= unit * 1.0001, f"corpus number {a} where {b} was recorded"


def test_a_centred_series_states_its_mean_as_zero():
    """Stage prompts state a centred series' mean as 0, not as its roundoff (whose digits depend on
    numpy's SIMD path); any other mean as it is. The corpus's `describe` keeps the plain mean."""
    from specdifftree.data.example import Example
    from specdifftree.data.prompts import describe, stated_mean

    x = 50 * np.sin(np.arange(38) / 3.0)
    x = x - x.mean()
    assert x.mean() != 0.0 and stated_mean(x) == 0.0 and stated_mean(np.zeros(4)) == 0.0
    assert stated_mean(x + 1e-6) == pytest.approx(1e-6) and stated_mean(np.array([1.0, 2.0])) == 1.5
    e = Example("stage1_mcq", [x], ["This is the series"], "Q?", "A:", "a")
    assert "This is the series, it has mean 0 and std " in e.prompt()
    assert f"mean {x.mean():.4g} and" in describe(x)


def test_generators_are_seeded():
    for make in (lambda r: synthetic.synthetic_series(r, 64), lambda r: synthetic.periodic_series(r, 64),
                 lambda r: synthetic.ecg(r, 96, 48, "premature"),
                 lambda r: synthetic.eeg(r, 96, 64, "n2"), lambda r: synthetic.accelerometer(r, 96, 52, "stairs")):
        a, b, c = make(np.random.default_rng(3)), make(np.random.default_rng(3)), make(np.random.default_rng(4))
        assert np.array_equal(a, b) and not np.allclose(a, c) and np.isfinite(a).all()


def test_components_show_what_they_were_built_to_show(rng):
    n = 120
    assert trend_word(synthetic.trend(n, 5.0) + 0.1 * synthetic.ar_noise(rng, n, 0.5, 1.0)) == "up"
    assert trend_word(synthetic.trend(n, -5.0)) == "down"
    x = np.sin(2 * np.pi * np.arange(n) / 12) + synthetic.spikes(rng, n, 0.0)
    assert abs(dominant_period(x) - 12) < 1 and spike_word(x) == "none"
    x[40] += 20
    assert spike_word(x) == "up"
    levels = synthetic.regime_levels(rng, n)
    assert 2 <= len(np.unique(levels)) <= 4


def test_labelled_generators_are_distinguishable(rng):
    from specdifftree.data.stages import ECG_FS, EEG_FS, HAR_FS, band_shares, r_peaks

    for rhythm, (lo, hi) in {"slow": (35, 58), "normal": (57, 103), "fast": (105, 165)}.items():
        beats = r_peaks(synthetic.ecg(rng, 480, ECG_FS, rhythm), ECG_FS)
        bpm = 60 * ECG_FS / np.median(np.diff(beats))
        assert lo <= bpm <= hi, (rhythm, bpm)
    beats = r_peaks(synthetic.ecg(rng, 480, ECG_FS, "premature"), ECG_FS)
    assert np.diff(beats).min() < 0.8 * np.median(np.diff(beats))
    top = {s: max(band_shares(synthetic.eeg(rng, 384, EEG_FS, s), EEG_FS).items(), key=lambda kv: kv[1])[0]
           for s in ("wake", "n3")}
    assert top == {"wake": "alpha", "n3": "delta"}
    still = synthetic.accelerometer(rng, 192, HAR_FS, "sitting")
    walk = synthetic.accelerometer(rng, 192, HAR_FS, "walking")
    assert walk.shape == (192, 3) and walk[:, 1].std() > 3 * still[:, 1].std()
    assert math.isclose(HAR_FS / dominant_period(walk[:, 1]), 1.9, abs_tol=0.5)


def test_periodic_series_repeats_its_shape():
    """Most periodic_series are continued better by some value 4-60 steps back than by the last one
    (31 of these 40; the rest are noise-dominated, as real hourly series can be)."""
    wins = 0
    for seed in range(40):
        x = synthetic.periodic_series(np.random.default_rng(seed), 240)
        best = min(np.abs(x[k:] - x[:-k]).mean() for k in range(4, 61))
        wins += best < np.abs(np.diff(x)).mean()
    assert wins >= 25

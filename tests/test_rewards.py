"""Spectral distances, the task terms, and `--reward` specs with plugins."""

import sys
import textwrap

import numpy as np
import pytest

from specdifftree.data.codec import NumberCodec
from specdifftree.errors import SDTError
from specdifftree.data.context import Context
from specdifftree.rewards import (REWARDS, BoundsReward, CompositeReward, FormatReward, LengthReward,
                                  SmoothnessReward, SpectralReward, log_psd_l1, parse_reward, psd, spec_w1)

T = np.arange(256)
SINE = np.sin(2 * np.pi * T / 16)


def tone(freq: float, n: int = 512) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(n))


def high_freq_noise(n: int, seed: int = 0) -> np.ndarray:
    """White noise differenced: power rises towards f = 0.5."""
    return np.diff(np.random.default_rng(seed).standard_normal(n + 1))


# ------------------------------------------------------------------ spectral distances


@pytest.mark.parametrize("method", ["welch", "periodogram"])
def test_psd_grid(method):
    f, s = psd(SINE, method, n_grid=33)
    np.testing.assert_allclose(f, np.linspace(0, 0.5, 33))
    assert s.shape == (33,) and np.all(s >= 0)
    assert f[np.argmax(s)] == pytest.approx(1 / 16, abs=1 / 64)
    with pytest.raises(ValueError):
        psd([1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        psd(SINE, "fft")


@pytest.mark.parametrize("method", ["welch", "periodogram"])
def test_distances_of_a_series_with_itself_are_zero(method):
    for x in (SINE, high_freq_noise(100), np.ones(20)):
        assert log_psd_l1(x, x, method) == 0.0
        assert spec_w1(x, x, method) == 0.0


def test_log_psd_l1_grows_with_high_frequency_noise():
    noise = high_freq_noise(len(SINE))
    d = [log_psd_l1(SINE + a * noise, SINE) for a in (0.01, 0.1, 1.0)]
    assert 0 < d[0] < d[1] < d[2]
    assert log_psd_l1(np.random.default_rng(1).standard_normal(256), SINE) > log_psd_l1(SINE[:64], SINE)


def test_log_psd_l1_is_scale_invariant_jointly():
    x = SINE[:64] + 0.1 * high_freq_noise(64)
    assert log_psd_l1(1e3 * x, 1e3 * SINE) == pytest.approx(log_psd_l1(x, SINE), rel=1e-9)


def test_spec_w1_symmetric_and_two_tones():
    x, c = SINE + 0.3 * high_freq_noise(256), SINE
    assert spec_w1(x, c) == spec_w1(c, x) > 0
    for f1, f2 in [(0.1, 0.3), (0.05, 0.45), (0.2, 0.25)]:
        assert spec_w1(tone(f1), tone(f2), n_grid=257) == pytest.approx(abs(f1 - f2), abs=0.01)


def test_spec_w1_flat_psd_is_uniform():
    # a constant series has no power: it counts as uniform on [0, 0.5]; a tone at 0.25 is at the
    # middle, so W1 = integral |f/0.5 - 1[f >= 0.25]| df = 0.125 (up to the grid and leakage)
    assert spec_w1(np.ones(64), tone(0.25, 64), n_grid=257) == pytest.approx(0.125, abs=0.01)


# ------------------------------------------------------------------ the spectral reward


def context(h=32, series=SINE, codec=None) -> Context:
    return Context(series=series, horizon=h, codec=codec)


def test_spectral_reward_is_minus_gamma_distance():
    codec = NumberCodec(precision=3)
    forecast = np.sin(2 * np.pi * np.arange(256, 256 + 40) / 16) + 0.2 * high_freq_noise(40)
    text = codec.encode(forecast)
    ctx = context(h=32, codec=codec)
    expected = log_psd_l1(codec.values_for(text, 32), SINE)
    assert SpectralReward(gamma=2.5)(text, ctx) == pytest.approx(-2.5 * expected, rel=1e-12)
    assert SpectralReward()(text, ctx) > SpectralReward()(codec.encode(high_freq_noise(32, seed=3)), ctx)


@pytest.mark.parametrize("text", ["", "1,2,3", "a,b,c,d,e", "1,,2,,3", "-", "9" * 400 + ",1,2,3", "١,٢,٣,٤"])
def test_spectral_reward_on_malformed_text(text):
    assert SpectralReward(invalid=-7.0)(text, context()) == -7.0


def test_spectral_reward_never_returns_nan_on_huge_values():
    r = SpectralReward()(",".join(["1" + "0" * 300, "-1" + "0" * 300] * 4), context(h=None))
    assert np.isfinite(r)


def test_spectral_reward_needs_a_series():
    with pytest.raises(SDTError, match="--series"):
        SpectralReward()("1,2,3,4", Context(horizon=4))
    with pytest.raises(SDTError):
        SpectralReward()("1,2,3,4", Context(series=np.array([1.0, 2.0]), horizon=4))


# ------------------------------------------------------------------ task terms


@pytest.mark.parametrize(
    "text, h, expected",
    [
        ("1,2,3", 3, 0.0),
        ("1,2,3,", 3, 0.0),
        ("1,2", 4, -0.5),
        ("1,x,3", 3, -2 / 3),  # one bad field, one value short
        ("1,2,3,4,5", 3, -2 / 3),
        ("7", None, 0.0),
        ("", None, -1.0),
        ("a,b", None, -3.0),
    ],
)
def test_format_reward(text, h, expected):
    assert FormatReward()(text, Context(horizon=h)) == pytest.approx(expected)


def test_length_reward():
    assert LengthReward()("1,2,3,4", Context(horizon=4)) == 0.0
    assert LengthReward()("1,2", Context(horizon=4)) == -0.5
    with pytest.raises(SDTError, match="--horizon"):
        LengthReward()("1,2", Context())


def test_smoothness_reward():
    ctx = Context(series=np.array([0.0, 2.0]), horizon=None)  # std 1
    assert SmoothnessReward()("1,2,3,4", ctx) == 0.0
    assert SmoothnessReward()("0,1,0", ctx) == pytest.approx(-4.0)
    assert SmoothnessReward()("0,2,0", Context(series=np.array([0.0, 4.0]))) == pytest.approx(-4.0)
    assert SmoothnessReward(invalid=-3.0)("1,2", ctx) == -3.0
    assert SmoothnessReward()("1,2,3", Context(series=np.ones(5))) == 0.0


def test_bounds_reward():
    ctx = Context(series=np.array([0.0, 10.0]), horizon=4)  # allowed range [-5, 15]
    assert BoundsReward()("0,15,-5,3", ctx) == 0.0
    assert BoundsReward()("16,0,-6,3,100", ctx) == -0.5  # the fifth value is past the horizon
    assert BoundsReward()("x", ctx) == -1.0
    with pytest.raises(SDTError):
        BoundsReward()("1", Context())


@pytest.mark.parametrize("name", sorted(REWARDS))
@pytest.mark.parametrize("text", ["", "-", "1,2,3,4,5,6", "\x00\u2603,1e999", ",,,,", "1" * 500])
def test_builtin_rewards_never_raise_on_text(name, text):
    r = REWARDS[name]()(text, Context(series=SINE, horizon=6))
    assert isinstance(r, float) and np.isfinite(r)


# ------------------------------------------------------------------ parse_reward


def test_parse_single_builtin_is_the_term_itself():
    assert isinstance(parse_reward("spectral"), SpectralReward)
    assert parse_reward(["zero"])("anything", Context()) == 0.0


def test_parse_weights_and_sums():
    ctx = Context(series=SINE, horizon=8)
    text = NumberCodec().encode(SINE[:8])
    r = parse_reward(["spectral + 0.5*format", " -2 * length"])
    assert isinstance(r, CompositeReward)
    assert r.describe() == r.name == "spectral + 0.5*format + -2*length"
    expected = SpectralReward()(text, ctx) + 0.5 * FormatReward()(text, ctx) - 2 * LengthReward()(text, ctx)
    assert r(text, ctx) == pytest.approx(expected)
    assert parse_reward("1e+1*length")("1,2", Context(horizon=4)) == pytest.approx(-5.0)


def write_plugin(path, body: str) -> str:
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_file_plugin(tmp_path):
    f = write_plugin(tmp_path / "my_reward.py", """
        from dataclasses import dataclass

        @dataclass
        class Cfg:
            k: float = 2.0

        def count(text, context):
            return Cfg().k * len(text)
        """)
    r = parse_reward(f"{f}:count + 0.5*format")
    assert r("1,2", Context()) == pytest.approx(6.0)
    assert r.describe() == f"{f}:count + 0.5*format"


def test_module_plugin(tmp_path, monkeypatch):
    write_plugin(tmp_path / "sdt_test_plugin_mod.py", "def neg_len(text, context):\n    return -len(text)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "sdt_test_plugin_mod", raising=False)
    assert parse_reward("sdt_test_plugin_mod:neg_len")("abc", Context()) == -3.0


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("", "empty reward spec"),
        ([], "empty reward spec"),
        ("spectral + ", "empty term"),
        ("spectrl", "Did you mean 'spectral'"),
        ("abc*format", "malformed weight 'abc'"),
        ("*format", "malformed weight"),
        ("nan*format", "malformed weight"),
        ("{tmp}/missing.py:fn", "does not exist"),
        ("{tmp}/broken.py:fn", "broken.py' failed to import: ZeroDivisionError"),
        ("{tmp}/syntax.py:fn", "failed to import: SyntaxError"),
        ("{tmp}/ok.py:nope", "no function 'nope'"),
        ("{tmp}/ok.py:CONST", "not callable"),
        ("no_such_module_xyz:fn", "cannot import module 'no_such_module_xyz'"),
    ],
)
def test_parse_errors_are_one_line(tmp_path, spec, needle):
    write_plugin(tmp_path / "broken.py", "x = 1 / 0\n")
    write_plugin(tmp_path / "syntax.py", "def f(:\n    pass\n")
    write_plugin(tmp_path / "ok.py", "CONST = 3\ndef fn(text, context):\n    return 0.0\n")
    spec = spec.replace("{tmp}", str(tmp_path)) if isinstance(spec, str) else spec
    with pytest.raises(SDTError) as err:
        parse_reward(spec)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg


# ------------------------------------------------------------------ caption-consistency


def _text(values):
    return ",".join(f"{v:.4f}" for v in values)


def test_caption_consistency_trend_term():
    from specdifftree.rewards.structure import penalties

    rng = np.random.default_rng(0)
    h = np.r_[np.zeros(40), np.linspace(0, 10, 56)] + rng.normal(0, 0.05, 96)  # ends rising
    keep = 10 + np.arange(1, 25) * 10 / 55
    flat = np.full(24, 10.0)
    back = 10 - np.arange(1, 25) * 10 / 30
    assert penalties(h, keep)["trend"] == 0.0 and penalties(h, flat)["trend"] < 0.2
    assert penalties(h, back)["trend"] == 1.0


def test_caption_consistency_period_and_spike_terms():
    from specdifftree.rewards.structure import penalties

    t = np.arange(120)
    h = np.sin(2 * np.pi * t / 12)
    same = np.sin(2 * np.pi * np.arange(120, 144) / 12)
    assert penalties(h, same)["period"] == pytest.approx(0.0, abs=1e-6)
    assert penalties(h, -same)["period"] == pytest.approx(1.0, abs=1e-6)
    spiky = same.copy()
    spiky[10] = 5.0
    assert penalties(h, same)["spike"] == 0.0 and penalties(h, spiky)["spike"] == 1.0
    h2 = h.copy()
    h2[[10, 40, 70, 100]] = 5.0  # a history full of spikes explains one in the forecast
    assert penalties(h2, spiky)["spike"] == 0.0


def test_caption_consistency_reward_is_registered_weightable_and_bounded():
    h = np.sin(2 * np.pi * np.arange(96) / 12)
    ctx = Context(series=h, horizon=24)
    r = parse_reward("caption-consistency")
    good = _text(np.sin(2 * np.pi * np.arange(96, 120) / 12))
    bad = _text(-np.sin(2 * np.pi * np.arange(96, 120) / 12) + np.r_[np.zeros(12), 9, np.zeros(11)])
    assert "caption-consistency" in REWARDS
    assert r(good, ctx) > r(bad, ctx) and -3 <= r(bad, ctx) <= 0
    assert r("x", ctx) == -3.0
    both = parse_reward("spectral + 0.5*caption-consistency")
    assert both(good, ctx) == pytest.approx(REWARDS["spectral"]()(good, ctx) + 0.5 * r(good, ctx))
    with pytest.raises(SDTError):
        r(good, Context(horizon=24))

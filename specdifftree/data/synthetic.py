"""Seeded synthetic series: generic components, and labelled generators for the curriculum.

Every function takes a `numpy.random.Generator` and draws from it in a fixed order, so a seed
gives the same series on every run. `synthetic_series` is the mix the default backbone's corpus
is made of (`data/corpus.py`); changing the order of its draws changes that corpus.

Labelled generators (the label is what the series was built to show):
    ecg(rng, n, fs, rhythm)          rhythm in ECG_RHYTHMS           -> [n]  (mV-like)
    eeg(rng, n, fs, stage)           stage in SLEEP_STAGES           -> [n]  (uV-like)
    accelerometer(rng, n, fs, act)   act in ACTIVITIES               -> [n, 3] (ADC counts, x/y/z)
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

ECG_RHYTHMS = ("normal", "fast", "slow", "premature")
SLEEP_STAGES = ("wake", "n1", "n2", "n3", "rem")
ACTIVITIES = ("sitting", "standing", "walking", "stairs")

# --------------------------------------------------------------------------- generic components


def ar_noise(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    """AR(1) noise x_t = phi x_{t-1} + e_t, e_t ~ N(0, sigma^2), started at 0.  -> [n]"""
    from scipy.signal import lfilter

    return lfilter([1.0], [1.0, -phi], rng.normal(0, sigma, n))


def regime_levels(rng: np.random.Generator, n: int) -> np.ndarray:
    """A piecewise-constant level with 1-3 change points (regime changes).  -> [n]"""
    cuts = np.sort(rng.choice(np.arange(4, max(5, n - 4)), size=rng.integers(1, 4), replace=False))
    levels = rng.normal(0, 1.5, len(cuts) + 1)
    return levels[np.searchsorted(cuts, np.arange(n), side="right")]


def seasonality(rng: np.random.Generator, n: int, n_waves: int = 1, min_period: float = 3.0,
                max_period: float | None = None) -> np.ndarray:
    """A sum of n_waves sines with periods drawn in [min_period, max_period] (None: n / 1.5),
    amplitudes in [0.2, 1] and random phases.  -> [n]"""
    t = np.arange(n, dtype=np.float64)
    hi = max_period if max_period is not None else max(min_period + 1.0, n / 1.5)
    x = np.zeros(n)
    for _ in range(n_waves):
        period = rng.uniform(min_period, hi)
        x += rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    return x


def trend(n: int, total_change: float) -> np.ndarray:
    """A straight line from 0 to total_change.  -> [n]"""
    return total_change * np.arange(n, dtype=np.float64) / max(1, n - 1)


def spikes(rng: np.random.Generator, n: int, rate: float, size=(2.0, 6.0), sign: float = 0.0) -> np.ndarray:
    """Isolated spikes at a per-point rate; sign +1 / -1 fixes their direction, 0 draws it.  -> [n]"""
    x = np.zeros(n)
    hits = rng.random(n) < rate
    signs = rng.choice([-1.0, 1.0], hits.sum()) if sign == 0 else np.full(hits.sum(), float(np.sign(sign)))
    x[hits] = signs * rng.uniform(size[0], size[1], hits.sum())
    return x


def synthetic_series(rng: np.random.Generator, n: int) -> np.ndarray:
    """One synthetic series of n points: a random mix of components on a random level/scale.  -> [n]"""
    t = np.arange(n, dtype=np.float64)
    kind = rng.choice(["seasonal", "seasonal", "ar", "regime", "spiky", "ecg", "accel"])
    if kind == "ecg":
        x = _ecg_like(rng, n)
    elif kind == "accel":
        x = _accel_like(rng, n)
    else:
        x = np.zeros(n)
        if kind == "seasonal" or rng.random() < 0.3:
            for _ in range(rng.integers(1, 4)):
                period = rng.uniform(3.0, max(4.0, n / 1.5))
                x += rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
        if kind == "regime":
            x += regime_levels(rng, n)
        if kind == "spiky":
            x += 0.3 * np.sin(2 * np.pi * t / rng.uniform(4, 48) + rng.uniform(0, 2 * np.pi))
            hits = rng.random(n) < rng.uniform(0.01, 0.06)
            x[hits] += rng.choice([-1.0, 1.0], hits.sum()) * rng.uniform(2.0, 6.0, hits.sum())
        x += ar_noise(rng, n, phi=rng.uniform(0.95, 0.995) if kind == "ar" else rng.uniform(0.0, 0.9),
                      sigma=rng.uniform(0.05, 0.3) if kind != "ar" else 0.3)
    return _placed(rng, x)


def periodic_series(rng: np.random.Generator, n: int) -> np.ndarray:
    """A repeated, non-sinusoidal pattern (M4-Hourly-like daily cycles): a random template of period
    4-48 made of its first 1-5 harmonics, repeated with a slowly drifting amplitude, plus AR(1)
    noise. A sine can be continued by local extrapolation; this shape is best continued by copying
    the value one period back (unless the noise drowns it), which is what seasonal forecasting needs.  -> [n]"""
    t = np.arange(n, dtype=np.float64)
    period = int(rng.choice([24, 24, 12, 7, 24])) if rng.random() < 0.5 else int(rng.integers(4, 49))
    x = np.zeros(n)
    for k in range(1, int(rng.integers(1, 6)) + 1):
        x += rng.uniform(0.1, 1.0) / k * np.sin(2 * np.pi * k * t / period + rng.uniform(0, 2 * np.pi))
    x *= 1.0 + rng.uniform(0.0, 0.3) * np.sin(2 * np.pi * t / rng.uniform(2 * n, 6 * n) + rng.uniform(0, 2 * np.pi))
    x /= x.std() + 1e-9
    x += ar_noise(rng, n, phi=rng.uniform(0.0, 0.9), sigma=rng.uniform(0.02, 0.3))
    return _placed(rng, x)


def _placed(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """x [n] with a random trend (40%), standardised, then on a random scale and level.  -> [n]"""
    n = len(x)
    if rng.random() < 0.4:  # trend
        x = x + rng.normal(0, 2.0) * np.arange(n, dtype=np.float64) / n
    x = (x - x.mean()) / (x.std() + 1e-9)
    scale = 10.0 ** rng.uniform(-1.5, 3.5)
    level = 0.0 if rng.random() < 0.3 else scale * rng.uniform(0.0, 8.0) * rng.choice([1.0, 1.0, 1.0, -1.0])
    return level + scale * x


# --------------------------------------------------------------------------- ECG

# P, Q, R, S, T waves: (centre, width) as fractions of 2 * beat period, amplitude in mV
_PQRST = [(-0.2, 0.04, 0.15), (-0.03, 0.012, -0.15), (0.0, 0.015, 1.0), (0.03, 0.012, -0.25), (0.25, 0.06, 0.3)]


def _add_beat(x: np.ndarray, t: np.ndarray, beat: float, period: float) -> None:
    """Add one P-QRS-T complex whose R peak is at sample `beat` (in place)."""
    for center, width, amp in _PQRST:
        x += amp * np.exp(-0.5 * ((t - beat - center * period * 2) / (width * period * 2)) ** 2)


def _ecg_like(rng, n):
    """P-QRS-T beats (Gaussian bumps) at a jittered heart period of 12-60 samples."""
    period = rng.uniform(12, 60)
    x = np.zeros(n)
    t = np.arange(n, dtype=np.float64)
    beat = rng.uniform(-period, 0)
    while beat < n + period:
        _add_beat(x, t, beat, period)
        beat += period * rng.uniform(0.95, 1.05)
    return x + rng.normal(0, 0.02, n)


def ecg(rng: np.random.Generator, n: int, fs: float, rhythm: str) -> np.ndarray:
    """One ECG lead at fs Hz showing `rhythm`.  -> [n]

    normal: 60-100 bpm; fast: 110-160 bpm; slow: 38-55 bpm; premature: 60-100 bpm with one
    beat early by 30-45% of the RR interval (inside the window), then a compensatory pause.
    Beat-to-beat jitter 3%, baseline wander and noise on top.
    """
    bpm = {"normal": (60, 100), "fast": (110, 160), "slow": (38, 55), "premature": (60, 100)}[rhythm]
    period = 60.0 * fs / rng.uniform(*bpm)
    t = np.arange(n, dtype=np.float64)
    beats, beat = [], rng.uniform(-period, 0)
    while beat < n + period:
        beats.append(beat)
        beat += period * rng.uniform(0.97, 1.03)
    if rhythm == "premature":
        inside = [i for i, b in enumerate(beats) if period * 0.6 <= b < n - period * 0.3]
        k = inside[rng.integers(len(inside))] if inside else len(beats) // 2
        shift = period * rng.uniform(0.3, 0.45)
        beats[k] -= shift  # early beat; the next beats keep their times (compensatory pause)
    x = np.zeros(n)
    for b in beats:
        _add_beat(x, t, b, min(period, 0.9 * fs))  # the QRS width does not grow with a slow rate
    wander = 0.1 * np.sin(2 * np.pi * t / (fs * rng.uniform(3, 8)) + rng.uniform(0, 2 * np.pi))
    return x + wander + rng.normal(0, 0.02, n)


# --------------------------------------------------------------------------- EEG (sleep stages)

# band (Hz) -> amplitude (uV) per stage; spindles (N2), K-complexes (N2) and sawtooth waves (REM) on top
_EEG_BANDS = {
    "wake": {(8, 12): 20.0, (15, 25): 8.0, (4, 7): 4.0},
    "n1": {(4, 7): 25.0, (8, 12): 6.0, (1, 3): 8.0},
    "n2": {(4, 7): 20.0, (1, 3): 15.0},
    "n3": {(0.5, 2): 75.0, (4, 7): 8.0},
    "rem": {(4, 7): 18.0, (15, 25): 6.0, (1, 3): 6.0},
}


def _band_noise(rng: np.random.Generator, n: int, fs: float, band: tuple[float, float]) -> np.ndarray:
    """Gaussian noise band-passed to `band` (clipped below Nyquist), unit std.  -> [n]"""
    from scipy.signal import sosfiltfilt

    pad = 3 * n
    x = sosfiltfilt(_band_filter(fs, band), rng.normal(0, 1, n + 2 * pad))[pad:-pad]
    return x / (x.std() + 1e-12)


@lru_cache(maxsize=64)
def _band_filter(fs: float, band: tuple[float, float]) -> np.ndarray:
    """Second-order Butterworth band-pass in second-order sections for `band` Hz at fs."""
    from scipy.signal import butter

    nyq = fs / 2
    lo, hi = band[0] / nyq, min(band[1], 0.9 * nyq) / nyq
    return butter(2, [lo, max(hi, lo * 1.2)], btype="band", output="sos")


def eeg(rng: np.random.Generator, n: int, fs: float, stage: str) -> np.ndarray:
    """One EEG channel (Fpz-Cz-like) at fs Hz in sleep `stage` (one of SLEEP_STAGES).  -> [n]"""
    t = np.arange(n, dtype=np.float64) / fs
    x = sum(amp * rng.uniform(0.8, 1.2) * _band_noise(rng, n, fs, band) for band, amp in _EEG_BANDS[stage].items())
    if stage == "n2":  # sleep spindles (12-14 Hz, ~1 s) and a K-complex
        for _ in range(rng.integers(1, 3)):
            c, f = rng.uniform(0, t[-1]), rng.uniform(12, 14)
            x += 25.0 * np.exp(-0.5 * ((t - c) / 0.25) ** 2) * np.sin(2 * np.pi * min(f, 0.45 * fs) * t)
        c = rng.uniform(0.2, 0.8) * t[-1]
        x += -80.0 * np.exp(-0.5 * ((t - c) / 0.15) ** 2) + 40.0 * np.exp(-0.5 * ((t - c - 0.4) / 0.2) ** 2)
    if stage == "rem":  # sawtooth waves, 2-5 Hz
        f = rng.uniform(2, 5)
        x += 15.0 * (2 * ((t * f + rng.uniform()) % 1.0) - 1)
    return x + rng.normal(0, 2.0, n)


# --------------------------------------------------------------------------- accelerometer


def _accel_like(rng, n):
    """Gait: a step frequency with harmonics and amplitude modulation, or near-stillness."""
    t = np.arange(n, dtype=np.float64)
    if rng.random() < 0.25:
        return ar_noise(rng, n, 0.9, 0.05) + rng.normal(0, 0.02, n)
    f = 1.0 / rng.uniform(5, 30)
    x = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * k * f * t + rng.uniform(0, 2 * np.pi)) for k in (1, 2, 3))
    return x * (1 + 0.3 * np.sin(2 * np.pi * t / rng.uniform(40, 200))) + rng.normal(0, 0.1, n)


# posture (mean x, y, z counts, as in the chest accelerometer data), sway std, step Hz, step amplitude
_ACTIVITY = {
    "sitting": ((1960, 2370, 2120), 8.0, None, 0.0),
    "standing": ((1895, 2383, 2010), 12.0, None, 0.0),
    "walking": ((1885, 2380, 2050), 10.0, (1.6, 2.2), 90.0),
    "stairs": ((1915, 2375, 2100), 15.0, (1.1, 1.6), 110.0),
}


def accelerometer(rng: np.random.Generator, n: int, fs: float, activity: str) -> np.ndarray:
    """Tri-axial chest accelerometer counts at fs Hz during `activity` (one of ACTIVITIES):
    a posture offset, slow sway, and for walking/stairs a step rhythm with harmonics, strongest on
    the vertical (y) axis; stairs are slower, stronger and less regular.  -> [n, 3]"""
    posture, sway, step_hz, amp = _ACTIVITY[activity]
    t = np.arange(n, dtype=np.float64) / fs
    x = np.asarray(posture, dtype=np.float64) + rng.normal(0, 15.0, 3)
    x = x + np.stack([sway * ar_noise(rng, n, 0.95, 0.3) for _ in range(3)], axis=1)
    if step_hz is not None:
        f = rng.uniform(*step_hz)
        jitter = 0.15 if activity == "stairs" else 0.04
        phase = 2 * np.pi * np.cumsum(f * (1 + jitter * ar_noise(rng, n, 0.9, 0.3)) / fs)
        gait = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3))
        x = x + amp * rng.uniform(0.8, 1.2) * np.outer(gait, (0.5, 1.0, 0.6))
    return x + rng.normal(0, 3.0, (n, 3))

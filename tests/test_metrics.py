"""Forecast metrics against values computed by hand."""

import itertools

import numpy as np
import pytest

from specdifftree.rewards import crps, mae, mase, mse, smape


def test_mse_mae():
    pred, target = [1.0, 2.0, 4.0], [1.0, 0.0, 1.0]
    assert mse(pred, target) == pytest.approx((0 + 4 + 9) / 3)
    assert mae(pred, target) == pytest.approx((0 + 2 + 3) / 3)


def test_mase_with_season():
    history = [1.0, 5.0, 2.0, 7.0, 4.0]  # season 2: |2-1|, |7-5|, |4-2| -> mean 5/3
    pred, target = [3.0, 3.0], [4.0, 6.0]  # MAE 2
    assert mase(pred, target, history, season=2) == pytest.approx(2 / (5 / 3))
    assert mase(pred, target, history) == pytest.approx(2 / ((4 + 3 + 5 + 3) / 4))


def test_mase_flat_history_is_guarded():
    assert mase([2.0], [2.0], [1.0, 1.0, 1.0]) == 0.0
    assert np.isfinite(mase([3.0], [2.0], [1.0, 1.0, 1.0]))
    with pytest.raises(ValueError):
        mase([1.0], [1.0], [1.0], season=1)


def test_smape():
    # terms: 2*1/(1+2) = 2/3, 0/0 -> 0, 2*2/(2+0) = 2
    assert smape([1.0, 0.0, 2.0], [2.0, 0.0, 0.0]) == pytest.approx(100 * (2 / 3 + 0 + 2) / 3)
    assert smape([0.0], [0.0]) == 0.0
    assert smape([1.0, -1.0], [-1.0, 1.0]) == pytest.approx(200.0)


def test_crps_single_sample_is_mae():
    pred, target = np.array([1.0, -2.0, 3.5]), np.array([0.0, 1.0, 3.0])
    assert crps(pred[None, :], target) == pytest.approx(mae(pred, target))


def test_crps_two_samples_by_hand():
    # step 1: samples {0, 2}, y = 1: E|X-y| = 1, E|X-X'| = (0 + 2 + 2 + 0) / 4 = 1 -> 0.5
    # step 2: samples {1, 1}, y = 4: E|X-y| = 3, E|X-X'| = 0 -> 3
    samples = np.array([[0.0, 1.0], [2.0, 1.0]])
    assert crps(samples, [1.0, 4.0]) == pytest.approx((0.5 + 3.0) / 2)


def test_crps_sorted_formula_matches_pairs():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((7, 3)), rng.standard_normal(3)
    by_pairs = np.mean(np.abs(x - y), axis=0) - 0.5 * np.mean(
        [np.abs(a - b) for a, b in itertools.product(x, x)], axis=0)
    assert crps(x, y) == pytest.approx(float(np.mean(by_pairs)))


def test_shape_errors():
    with pytest.raises(ValueError):
        mse([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        crps([1.0, 2.0], [1.0, 2.0])

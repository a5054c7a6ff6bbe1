"""Metrics on constructed data with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from core.calibration import metrics as M


def _calibrated_grid():
    """Probabilities 0.05..0.95, each given to 100 items of which exactly 100*p are fake."""
    probs, labels = [], []
    for v in np.arange(0.05, 1.0, 0.1):
        k = int(round(100 * v))
        probs += [v] * 100
        labels += [1] * k + [0] * (100 - k)
    return np.array(probs), np.array(labels)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_perfectly_calibrated_scores_have_zero_ece(strategy, n_bins):
    p, y = _calibrated_grid()
    assert M.ece(p, y, n_bins, strategy) == pytest.approx(0.0, abs=1e-12)


def test_sampled_calibrated_scores_have_small_ece():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=100_000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    assert M.ece(p, y) < 0.01
    assert M.ece(p, y, strategy="quantile") < 0.01
    # the same labels with over-confident scores are clearly miscalibrated
    sharp = np.where(p > 0.5, 0.99, 0.01)
    assert M.ece(sharp, y) > 0.2


def test_constant_prediction_has_known_scores():
    y = np.array([0, 1] * 50)
    p = np.full(100, 0.8)
    assert M.ece(p, y) == pytest.approx(0.3)
    assert M.brier(p, y) == pytest.approx(0.5 * 0.8 ** 2 + 0.5 * 0.2 ** 2)
    assert M.nll(p, y) == pytest.approx(-0.5 * math.log(0.8) - 0.5 * math.log(0.2))


def test_equal_mass_bins_never_split_ties():
    # a plateau of identical scores sorted by label would look miscalibrated if split
    p = np.full(200, 0.5)
    y = np.array([0] * 100 + [1] * 100)
    assert M.ece(p, y, 10, "quantile") == pytest.approx(0.0)


def test_reliability_curve_data():
    p, y = _calibrated_grid()
    c = M.reliability_curve(p, y, n_bins=10)
    assert sum(c["count"]) == p.size and len(c["count"]) == 10
    np.testing.assert_allclose(c["mean_predicted"], c["fraction_fake"])
    assert all(lo <= f <= hi for lo, f, hi in zip(c["ci_low"], c["fraction_fake"], c["ci_high"]))
    assert c["bin_lower"][0] == 0.0 and c["bin_upper"][-1] == 1.0


def test_eer_on_known_roc():
    # reals score 0..99, fakes 20..119: at threshold 60, FPR = 40/100 = FNR
    real, fake = np.arange(100), np.arange(20, 120)
    s = np.concatenate([real, fake]).astype(float)
    y = np.array([0] * 100 + [1] * 100)
    rate, thr = M.eer(s, y)
    assert rate == pytest.approx(0.4)
    assert thr == pytest.approx(60)
    assert M.tpr_at_fpr(s, y, 0.05) == pytest.approx(0.25)  # threshold 95: fakes 95..119


def test_eer_interpolates_between_operating_points():
    # ROC points (fpr, fnr): (1/3, 1/2) then (1/3, 0): the crossing is at 1/3
    s = np.array([0, 1, 3, 2, 4], dtype=float)
    y = np.array([0, 0, 0, 1, 1])
    assert M.eer(s, y)[0] == pytest.approx(1 / 3)
    assert M.eer([0, 1, 2, 3], [0, 0, 1, 1])[0] == pytest.approx(0.0)
    assert M.eer([0, 1, 2, 3], [1, 1, 0, 0])[0] == pytest.approx(1.0)


def test_ranking_metrics_and_curves():
    assert M.auc([0, 1, 2, 3], [0, 0, 1, 1]) == 1.0
    assert M.average_precision([0, 1, 2, 3], [0, 0, 1, 1]) == 1.0
    assert M.auc([0, 1, 2, 3], [1, 1, 0, 0]) == 0.0
    assert math.isnan(M.auc([0.1, 0.2], [1, 1]))
    s = np.array([0, 1, 3, 2, 4], dtype=float)
    y = np.array([0, 0, 0, 1, 1])
    roc, det = M.roc_points(s, y), M.det_points(s, y)
    assert roc["fpr"][0] == 0 and roc["fpr"][-1] == 1 and roc["tpr"][-1] == 1
    np.testing.assert_allclose(det["fnr"], 1 - np.asarray(roc["tpr"]))
    assert det["eer"] == pytest.approx(1 / 3)
    assert roc["auc"] == pytest.approx(5 / 6)


def test_accuracy_at_threshold():
    r = M.accuracy_at([0.1, 0.6, 0.4, 0.9], [0, 0, 1, 1], 0.5)
    assert r == {"accuracy": 0.5, "real_accuracy": 0.5, "fake_accuracy": 0.5}
    r = M.accuracy_at([0.1, 0.6, 0.4, 0.9], [0, 0, 1, 1], 0.4)  # >= threshold is fake
    assert r["fake_accuracy"] == 1.0 and r["real_accuracy"] == 0.5


def test_metrics_row_from_probabilities_or_logits():
    rng = np.random.default_rng(1)
    z = rng.normal(size=300)
    y = (rng.uniform(size=300) < M.sigmoid(2 * z)).astype(int)
    a = M.metrics_row(M.sigmoid(z), y, 0.5)
    b = M.metrics_row(z, y, 0.5, from_logits=True)
    assert a == pytest.approx(b)
    assert set(M.ROW_COLUMNS) <= set(a)
    assert a["n"] == 300 and a["n_real"] + a["n_fake"] == 300 and 0.5 < a["auc"] < 1
    one_class = M.metrics_row([0.2, 0.7], [1, 1])
    assert math.isnan(one_class["auc"]) and math.isnan(one_class["real_accuracy"]) and one_class["fake_accuracy"] == 0.5


def test_json_safe_turns_nan_into_none():
    out = M.json_safe({"a": np.float64("nan"), "b": [np.int64(3), 1.5], "c": np.array([1.0])})
    assert out == {"a": None, "b": [3, 1.5], "c": [1.0]}


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        M.ece([0.5, 0.5], [0, 2])
    with pytest.raises(ValueError):
        M.brier([0.5], [0, 1])

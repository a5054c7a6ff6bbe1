"""Review tiers: targets met on the fitting data, narrowest band, manual tiers, projections."""
from __future__ import annotations

import math

import numpy as np
import pytest

from core.calibration import tiers as T
from core.errors import CalibrationError


def _overlapping(n: int = 400, seed: int = 0, gap: float = 1.5):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(int)
    z = rng.normal(0, 1, n) + gap * (y - 0.5) * 2
    return 1 / (1 + np.exp(-z)), y


@pytest.mark.parametrize("fpr,fnr", [(0.05, 0.20), (0.01, 0.01), (0.1, 0.05), (0.0, 0.0), (0.3, 0.3)])
@pytest.mark.parametrize("seed", [0, 1])
def test_fitted_thresholds_meet_targets_on_fitting_data(fpr, fnr, seed):
    p, y = _overlapping(seed=seed)
    tiers = T.tiers_from_targets(p, y, fpr, fnr, calibration_version="cal-x")
    proj = T.project_tiers(p, y, tiers["real_below"], tiers["fake_at_or_above"])
    assert proj["fpr"] <= fpr + 1e-12 and proj["fnr"] <= fnr + 1e-12
    assert tiers["achieved"]["fpr"] == pytest.approx(proj["fpr"])
    assert tiers["achieved"]["fnr"] == pytest.approx(proj["fnr"])
    assert tiers["expected_review_share"] == pytest.approx(proj["review_share"])
    assert tiers["real_below"] <= tiers["fake_at_or_above"]
    assert tiers["source"] == "fitted" and tiers["targets"] == {"fpr": fpr, "fnr": fnr}
    assert tiers["calibration_version"] == "cal-x"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_review_band_is_the_narrowest_that_meets_targets(seed):
    p, y = _overlapping(seed=seed, gap=0.75)
    tiers = T.tiers_from_targets(p, y, 0.05, 0.20)
    lo, hi = tiers["real_below"], tiers["fake_at_or_above"]
    assert lo < hi  # these classes overlap: a review band is needed
    # lowering the fake threshold to the next data point below it breaks the FPR target
    below_hi = p[p < hi].max()
    assert T.project_tiers(p, y, lo, below_hi)["fpr"] > 0.05
    # raising the real threshold past the next data point at or above it breaks the FNR target
    at_lo = p[p >= lo].min()
    assert T.project_tiers(p, y, np.nextafter(at_lo, 1), hi)["fnr"] > 0.20


def test_known_small_example():
    # reals 0.1..0.5, fakes 0.3..0.9; allow 1 of 5 reals in the fake tier, 1 of 5 fakes in the real tier
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.3, 0.6, 0.7, 0.8, 0.9])
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    # FPR target alone: fake at or above 0.45 (only the 0.5 real called fake);
    # FNR target alone: real below 0.55 (only the 0.3 fake called real). They cross,
    # so one threshold in [0.45, 0.55] serves both: 0.55 is the most accurate (9/10).
    tiers = T.tiers_from_targets(p, y, 0.2, 0.2)
    assert tiers["fake_at_or_above"] == pytest.approx(0.55) and tiers["real_below"] == pytest.approx(0.55)
    assert tiers["expected_review_share"] == 0.0
    assert tiers["achieved"]["fpr"] == 0.0 and tiers["achieved"]["fnr"] == pytest.approx(0.2)
    assert tiers["achieved"]["accuracy_outside_review"] == pytest.approx(0.9)
    # a stricter FPR target opens a review band between the two
    strict = T.tiers_from_targets(p, y, 0.0, 0.2)
    assert strict["fake_at_or_above"] == pytest.approx(0.55) and strict["real_below"] == pytest.approx(0.55)
    strict = T.tiers_from_targets(p, y, 0.2, 0.0)  # no fake may be called real: below 0.3 only
    assert strict["real_below"] == pytest.approx(0.25) and strict["fake_at_or_above"] == pytest.approx(0.45)
    assert strict["expected_review_share"] == pytest.approx(3 / 10)  # reals 0.3 and 0.4, the 0.3 fake


def test_separable_classes_need_no_review():
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    y = np.array([0, 0, 0, 1, 1, 1])
    tiers = T.tiers_from_targets(p, y, 0.05, 0.2)
    assert tiers["real_below"] == tiers["fake_at_or_above"]
    assert 0.3 < tiers["real_below"] <= 0.7
    assert tiers["expected_review_share"] == 0.0 and tiers["achieved"]["accuracy_outside_review"] == 1.0


def test_tier_semantics_at_the_boundaries():
    tiers = {"real_below": 0.3, "fake_at_or_above": 0.7}
    assert T.tier_of(0.2999, tiers) == "real"
    assert T.tier_of(0.3, tiers) == "review"
    assert T.tier_of(0.6999, tiers) == "review"
    assert T.tier_of(0.7, tiers) == "fake"
    probs = np.array([0.0, 0.3, 0.5, 0.7, 1.0])
    assert T.tiers_of(probs, tiers).tolist() == [T.tier_of(v, tiers) for v in probs]


def test_project_tiers_known_numbers():
    p = np.array([0.1, 0.4, 0.8, 0.2, 0.5, 0.9])
    y = np.array([0, 0, 0, 1, 1, 1])
    proj = T.project_tiers(p, y, 0.3, 0.7)
    assert proj["fpr"] == pytest.approx(1 / 3)  # the 0.8 real
    assert proj["fnr"] == pytest.approx(1 / 3)  # the 0.2 fake
    assert proj["review_share"] == pytest.approx(2 / 6)
    assert proj["accuracy_outside_review"] == pytest.approx(2 / 4)
    assert (proj["called_real"], proj["in_review"], proj["called_fake"]) == (2, 2, 2)


def test_manual_tiers_with_and_without_data():
    t = T.manual_tiers(0.3, 0.7)
    assert t["source"] == "manual" and t["expected_review_share"] is None and t["achieved"] is None
    p, y = _overlapping()
    t = T.manual_tiers(0.3, 0.7, p, y, calibration_version="cal-y")
    proj = T.project_tiers(p, y, 0.3, 0.7)
    assert t["expected_review_share"] == pytest.approx(proj["review_share"])
    assert t["achieved"]["fpr"] == pytest.approx(proj["fpr"]) and t["calibration_version"] == "cal-y"
    with pytest.raises(CalibrationError, match="real_below <= fake_at_or_above"):
        T.manual_tiers(0.8, 0.2)


def test_degenerate_tier_inputs_fail_clearly():
    with pytest.raises(CalibrationError, match="real and fake"):
        T.tiers_from_targets([0.1, 0.2], [0, 0])
    with pytest.raises(CalibrationError, match="target_fpr"):
        T.tiers_from_targets([0.1, 0.9], [0, 1], target_fpr=1.5)
    with pytest.raises(CalibrationError, match="inverted"):
        T.validate_tiers({"real_below": 0.9, "fake_at_or_above": 0.1})
    empty = T.project_tiers([0.2], [0], 0.5, 0.5)
    assert math.isnan(empty["fnr"]) and empty["fpr"] == 0.0

"""Calibration fitting on constructed data with known answers, records and their storage."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from core.calibration import calibrators as C
from core.model.checkpoint import Checkpoint, load_checkpoint
from core.scoring.detector import Detector
from core.errors import CalibrationError
from core.calibration.metrics import ece, sigmoid
from core.model.models import build_model
from core.model.preprocess import official_spec


def _sample(n: int, seed: int, scale: float = 3.0):
    """True logits z ~ N(0, scale²) and labels drawn from sigmoid(z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, scale, size=n)
    y = (rng.uniform(size=n) < sigmoid(z)).astype(int)
    return z, y


@pytest.mark.parametrize("true_t", [2.5, 0.4, 1.0])
def test_temperature_scaling_recovers_known_temperature(true_t):
    z, y = _sample(40_000, seed=int(true_t * 10))
    record = C.fit_calibration(z * true_t, y, "temperature")
    assert record["params"]["temperature"] == pytest.approx(true_t, rel=0.05)


def test_temperature_scaling_lowers_ece_of_overconfident_scores():
    z, y = _sample(5000, seed=1)
    record = C.fit_calibration(4.0 * z, y, "temperature")
    assert record["metrics_after"]["ece"] < 0.03 < record["metrics_before"]["ece"]
    assert record["metrics_after"]["nll"] < record["metrics_before"]["nll"]
    assert record["metrics_after"]["auc"] == pytest.approx(record["metrics_before"]["auc"])


def test_platt_recovers_known_slope_and_offset():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 3, size=40_000)
    y = (rng.uniform(size=z.size) < sigmoid(0.7 * z - 1.2)).astype(int)
    record = C.fit_calibration(z, y, "platt")
    assert record["params"]["a"] == pytest.approx(0.7, rel=0.05)
    assert record["params"]["b"] == pytest.approx(-1.2, rel=0.05)
    p = C.apply_record(record, z)
    np.testing.assert_allclose(p, sigmoid(record["params"]["a"] * z + record["params"]["b"]))


def test_platt_is_finite_on_separable_data():
    z = np.array([-3.0, -2, -1, 1, 2, 3])
    y = np.array([0, 0, 0, 1, 1, 1])
    record = C.fit_calibration(z, y, "platt")
    assert np.isfinite(record["params"]["a"]) and 0 < record["params"]["a"] < 20


def test_isotonic_is_monotone_bounded_and_calibrated_in_sample():
    z, y = _sample(3000, seed=3)
    record = C.fit_calibration(3.0 * z, y, "isotonic")
    xs, ys = np.asarray(record["params"]["x"]), np.asarray(record["params"]["y"])
    assert np.all(np.diff(xs) >= 0) and np.all(np.diff(ys) >= 0)
    assert ys.min() >= C.ISOTONIC_EPS and ys.max() <= 1 - C.ISOTONIC_EPS
    p = C.apply_record(record, 3.0 * z)
    assert ece(p, y) < 2 * C.ISOTONIC_EPS  # blocks are averages of their labels
    assert record["metrics_after"]["ece"] < record["metrics_before"]["ece"]
    assert record["warnings"] == []  # 3000 samples is enough


def test_degenerate_inputs_fail_clearly():
    with pytest.raises(CalibrationError, match="both real and fake"):
        C.fit_calibration([0.1, 0.5, 2.0], [1, 1, 1], "temperature")
    with pytest.raises(CalibrationError, match="both real and fake"):
        C.fit_calibration([], [], "platt")
    with pytest.raises(CalibrationError, match="Isotonic calibration needs at least"):
        C.fit_calibration(np.arange(20.0), [0, 1] * 10, "isotonic")
    with pytest.raises(CalibrationError, match="at least 10 of each class"):
        C.fit_calibration(np.arange(60.0), [0] * 55 + [1] * 5, "isotonic")
    with pytest.raises(CalibrationError, match="Unknown calibration method"):
        C.fit_calibration([0.0, 1.0], [0, 1], "magic")
    with pytest.raises(CalibrationError, match="NaN"):
        C.fit_calibration([0.0, float("nan")], [0, 1], "temperature")
    with pytest.raises(CalibrationError, match="2 logits but 3 labels"):
        C.fit_calibration([0.0, 1.0], [0, 1, 1], "temperature")


def test_record_is_versioned_and_describes_its_data():
    z, y = _sample(500, seed=4)
    record = C.fit_calibration(z, y, "temperature", context={"data": "x.csv"})
    assert re.fullmatch(r"cal-temperature-[0-9a-f]{8}-\d{14}", record["version"])
    assert record["version"].split("-")[2] == record["data_sha256"][:8]
    assert record["n"] == 500 and record["n_real"] + record["n_fake"] == 500 and record["n_fake"] == int(y.sum())
    assert record["fitted_at"].endswith("+00:00") and record["context"] == {"data": "x.csv"}
    for key in ("ece", "ece_mass", "brier", "nll", "auc", "ap"):
        assert key in record["metrics_before"] and key in record["metrics_after"]
    # the data hash ignores row order but not content
    order = np.random.default_rng(0).permutation(500)
    assert C.data_sha256(z[order], y[order]) == record["data_sha256"]
    assert C.data_sha256(z, 1 - y) != record["data_sha256"]


def test_metrics_before_use_the_baseline_record():
    z, y = _sample(1000, seed=5)
    first = C.fit_calibration(5 * z, y, "temperature")
    second = C.fit_calibration(5 * z, y, "platt", baseline=first)
    assert second["metrics_before"]["calibration"] == first["version"]
    assert second["metrics_before"]["ece"] == pytest.approx(first["metrics_after"]["ece"])


def test_record_round_trips_as_json_and_in_a_checkpoint(tmp_path):
    z, y = _sample(400, seed=6)
    record = C.fit_calibration(2 * z, y, "isotonic")
    path = C.save_record(record, tmp_path / "cal.json")
    assert C.load_record(path) == record
    torch.manual_seed(0)
    model = build_model("tiny", "right_diag")
    ck = Checkpoint(arch={"name": "tiny", "channels": 8}, spec=official_spec("right_diag"),
                    state_dict=model.state_dict(), calibration=record, provenance={"source": "test"})
    ck.save(tmp_path / "m.pt")
    again = load_checkpoint(tmp_path / "m.pt")  # weights_only load: the record holds plain types only
    assert again.calibration == record and again.calibration_version == record["version"]
    det = Detector(again, fast=False)
    p, calibrated = det.probability(np.array([-1.0, 0.0, 3.0]))
    assert calibrated and np.allclose(p, C.apply_record(record, [-1.0, 0.0, 3.0]))


def test_invalid_records_are_refused(tmp_path):
    with pytest.raises(CalibrationError):
        C.validate_record({"method": "temperature", "params": {"temperature": -1}, "version": "v"})
    with pytest.raises(CalibrationError):
        C.validate_record({"method": "isotonic", "params": {"x": [0, 1], "y": [0.9, 0.1]}, "version": "v"})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CalibrationError, match="Cannot read"):
        C.load_record(bad)
    assert "uncalibrated" in C.describe(None)


def test_cli_method_choices_match_the_library():
    from core.cli import calibrate as cli

    assert cli.METHODS == C.METHODS  # the CLI keeps a literal copy so its parser does not import scikit-learn

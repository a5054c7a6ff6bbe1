"""Evaluation engine, report files, and the calibrate / evaluate commands (small data + the official Tiny)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from core.evaluation import evaluate as E
from core.__main__ import main
from core.calibration.calibrators import apply_record, load_record
from core.model.checkpoint import load_checkpoint
from core.scoring.detector import Detector
from core.calibration.metrics import ece
from core.calibration.tiers import project_tiers

from .conftest import CORPUS, REPO, make_photo, needs_corpus, save_random_tiny

REQUIRED_METRICS = {"source", "condition", "n", "accuracy", "real_accuracy", "fake_accuracy", "ap", "auc", "eer",
                    "ece"}


@pytest.fixture(scope="module")
def half_tiny(tmp_path_factory):
    """A random-weight Tiny stored in float16 (tests that calibrate keeps the dtype)."""
    return save_random_tiny(tmp_path_factory.mktemp("model") / "tiny16.pt", seed=7, dtype="float16")


@pytest.fixture(scope="module")
def wildrf_dir(tmp_path_factory):
    """Two sources with two real and two fake images each; fakes are blurrier, so scores differ."""
    root = tmp_path_factory.mktemp("data") / "test"
    for s, source in enumerate(("alpha", "beta")):
        for label in ("0_real", "1_fake"):
            d = root / source / label
            d.mkdir(parents=True)
            for i in range(2):
                img = make_photo(96 + 16 * i, 80, seed=10 * s + i + (5 if label == "1_fake" else 0))
                if label == "1_fake":
                    img = img.resize((48, 40)).resize(img.size, Image.Resampling.BICUBIC)
                img.save(d / f"{label}_{i}.jpg", quality=95)
    return root


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_perturbations_do_what_they_say():
    img = make_photo(120, 80)
    arr = np.asarray(img, dtype=float)
    assert E.CONDITIONS["clean"](img) is img
    assert E.CONDITIONS["downscale_0.5"](img).size == (60, 40)
    blurred = np.asarray(E.CONDITIONS["blur_sigma1"](img), dtype=float)
    assert blurred.shape == arr.shape and np.abs(np.diff(blurred, axis=1)).mean() < np.abs(np.diff(arr, axis=1)).mean()
    errors = [np.abs(np.asarray(E.CONDITIONS[f"jpeg_q{q}"](img), dtype=float) - arr).mean() for q in (95, 75, 50, 30)]
    assert 0 < errors[0] < errors[-1]
    assert all(E.CONDITIONS[c](img).mode == "RGB" for c in E.CONDITIONS)


def test_evaluate_matches_scoring_api_and_writes_report(half_tiny, wildrf_dir, tmp_path):
    det = Detector.load(half_tiny)
    result = E.evaluate(det, wildrf_dir, robustness=True, progress=False, batch_size=5)
    assert result.conditions == ["clean", *E.ROBUSTNESS_CONDITIONS] and len(result.conditions) == 7
    assert len(result.scores) == 8 * 7 and len(result.rows) == 3 * 7
    assert {r["source"] for r in result.rows} == {"alpha", "beta", "ALL"}
    assert result.row("ALL", "clean")["n"] == 8 and result.row("alpha", "jpeg_q30")["n"] == 4
    # batched clean logits are the scoring API's logits
    clean = {s["file"]: s for s in result.scores if s["condition"] == "clean"}
    for f, s in list(clean.items())[:3]:
        assert s["logit"] == pytest.approx(det.score(f).logit, abs=1e-5)
        assert s["probability"] == pytest.approx(1 / (1 + np.exp(-s["logit"])))
    blurred = {s["file"]: s["logit"] for s in result.scores if s["condition"] == "blur_sigma1"}
    assert any(abs(blurred[f] - clean[f]["logit"]) > 1e-4 for f in clean)

    paths = E.write_report(result, tmp_path / "rep")
    for name in ("report.md", "metrics.csv", "scores.csv", "reliability.html", "roc.html", "det.html",
                 "robustness.html"):
        assert paths[name].exists() and paths[name].stat().st_size > 0
    assert (tmp_path / "rep" / "plotly.min.js").exists()
    rows = _read_csv(paths["metrics.csv"])
    assert REQUIRED_METRICS <= set(rows[0]) and len(rows) == 21
    all_clean = [r for r in rows if r["source"] == "ALL" and r["condition"] == "clean"]
    assert len(all_clean) == 1 and int(all_clean[0]["n"]) == 8
    assert float(all_clean[0]["ece"]) == pytest.approx(result.row("ALL", "clean")["ece"], abs=1e-6)
    scores = _read_csv(paths["scores.csv"])
    assert list(scores[0]) == ["file", "label", "source", "condition", "logit", "probability"] and len(scores) == 56
    report = paths["report.md"].read_text()
    assert "| source | n | accuracy |" in report and "Robustness" in report and "jpeg_q30" in report


def test_calibrate_from_review_export_csv(half_tiny, tmp_path, capsys):
    ck = load_checkpoint(half_tiny)
    rng = np.random.default_rng(0)
    csv_path = tmp_path / "export.csv"
    cols = ["sha256", "logit", "probability", "label", "reviewer", "labelled_at", "model_sha256",
            "calibration_version", "preprocess_fingerprint"]
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for i in range(300):
            label = ["real", "fake", "unsure"][i % 3]
            z = rng.normal(4.0 if label == "fake" else -4.0, 3.0)
            w.writerow({"sha256": f"{i:064x}", "logit": z, "probability": 1 / (1 + np.exp(-z)), "label": label,
                        "reviewer": "ana", "labelled_at": "2026-01-01T00:00:00+00:00", "model_sha256": ck.sha256,
                        "calibration_version": "", "preprocess_fingerprint": ck.spec.fingerprint()})
    out = tmp_path / "cal.pt"
    rc = main(["calibrate", "--model", str(half_tiny), "--data", str(csv_path), "--method", "platt",
               "--out", str(out), "--record-out", str(tmp_path / "rec.json")])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "before" in printed.out and "ece" in printed.out
    new = load_checkpoint(out)
    rec, tiers = new.calibration, new.tiers
    assert rec["method"] == "platt" and rec["n"] == 200 and rec["n_real"] == 100  # unsure rows skipped
    assert tiers["calibration_version"] == rec["version"] and rec["tiers"] == tiers
    assert tiers["targets"] == {"fpr": 0.05, "fnr": 0.2}
    assert tiers["achieved"]["fpr"] <= 0.05 and tiers["achieved"]["fnr"] <= 0.2
    assert all(v.dtype == torch.float16 for v in new.state_dict.values() if v.is_floating_point())
    assert new.provenance["calibrated_from_sha256"] == ck.sha256
    assert load_record(tmp_path / "rec.json") == rec
    assert Detector(new, fast=False).probability(0.0)[1] is True

    # manual tiers, and one-class data refused with a readable message (exit code 2)
    rc = main(["calibrate", "--model", str(half_tiny), "--data", str(csv_path), "--method", "temperature",
               "--real-below", "0.2", "--fake-at-or-above", "0.8", "--out", str(tmp_path / "m.pt"), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and summary["tiers"]["source"] == "manual" and summary["tiers"]["real_below"] == 0.2
    one = tmp_path / "one.csv"
    one.write_text("logit,label\n1.0,fake\n2.0,fake\n0.5,unsure\n")
    rc = main(["calibrate", "--model", str(half_tiny), "--data", str(one), "--method", "temperature",
               "--out", str(tmp_path / "x.pt")])
    assert rc == 2 and "both real and fake" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def test_calibrate_refuses_logits_from_other_preprocessing(half_tiny, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("logit,label,preprocess_fingerprint\n1.0,fake,abc123\n-1.0,real,abc123\n")
    rc = main(["calibrate", "--model", str(half_tiny), "--data", str(bad), "--method", "temperature",
               "--out", str(tmp_path / "x.pt")])
    assert rc == 2 and "preprocessing abc123" in capsys.readouterr().err


def test_calibrate_on_folder_then_evaluate_reports_tiers(half_tiny, wildrf_dir, tmp_path, capsys):
    out = tmp_path / "cal.pt"
    rc = main(["calibrate", "--model", str(half_tiny), "--data", str(wildrf_dir), "--method", "temperature",
               "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert load_checkpoint(out).calibration["n"] == 8
    capsys.readouterr()
    rc = main(["evaluate", "--model", str(out), "--data", str(wildrf_dir), "--report", str(tmp_path / "rep"),
               "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0 and "| ALL | 8 |" in printed and "review_share" in printed
    rows = _read_csv(tmp_path / "rep" / "metrics.csv")
    assert {r["condition"] for r in rows} == {"clean"} and all(r["review_share"] != "" for r in rows)


@needs_corpus
@pytest.mark.slow
def test_official_tiny_on_val_temperature_scaling_lowers_ece(official_tiny_wildrf, tmp_path, capsys):
    """End to end: evaluate the official Tiny (WildRF) on val, calibrate it there, compare ECE."""
    val = CORPUS / "val"
    report = tmp_path / "before"
    run = [sys.executable, "-m", "core"]
    done = subprocess.run(run + ["evaluate", "--model", str(official_tiny_wildrf), "--data", str(val),
                                 "--report", str(report), "--no-progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = _read_csv(report / "metrics.csv")
    before = next(r for r in rows if r["source"] == "ALL" and r["condition"] == "clean")
    assert int(before["n"]) == 108

    out = tmp_path / "tiny_cal.pt"  # in-process: same parser, no second interpreter start-up
    rc = main(["calibrate", "--model", str(official_tiny_wildrf), "--data", str(val), "--method", "temperature",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    cal = load_checkpoint(out)
    rec = cal.calibration
    assert rec["method"] == "temperature" and rec["n"] == 108
    assert rec["metrics_after"]["ece"] < rec["metrics_before"]["ece"]
    assert rec["metrics_before"]["ece"] == pytest.approx(float(before["ece"]), abs=1e-5)

    # the same logits from the evaluate run, through the new calibration
    scores = _read_csv(report / "scores.csv")
    z = np.array([float(s["logit"]) for s in scores])
    y = np.array([int(s["label"]) for s in scores])
    p_after = apply_record(rec, z)
    assert ece(p_after, y) < float(before["ece"])
    proj = project_tiers(p_after, y, cal.tiers["real_below"], cal.tiers["fake_at_or_above"])
    # thresholds are fitted on out-of-fold probabilities, so the targets hold on labels the map did not see
    assert cal.tiers["measured_on"] == "out_of_fold"
    assert cal.tiers["achieved"]["fpr"] <= 0.05 and cal.tiers["achieved"]["fnr"] <= 0.20
    assert rec["metrics_out_of_fold"]["folds"] == 5 and rec["metrics_out_of_fold"]["ece"] > 0
    assert proj["fpr"] <= 0.10 and proj["fnr"] <= 0.30  # in-sample: the same thresholds, close to the targets
    orig_dtype = {v.dtype for v in load_checkpoint(official_tiny_wildrf).state_dict.values() if v.is_floating_point()}
    assert {v.dtype for v in cal.state_dict.values() if v.is_floating_point()} == orig_dtype


def test_chart_functions_take_one_curve_or_named_curves():
    from core.evaluation import charts
    from core.calibration import metrics as M

    s, y = np.array([0.1, 0.4, 0.35, 0.8, 0.9]), np.array([0, 0, 1, 1, 1])
    one = charts.reliability_figure(M.reliability_curve(s, y, 5))
    assert [t.name for t in one.data] == ["perfect calibration", f"model (ECE {M.ece(s, y, 5):.3f})"]
    named = charts.roc_figure({"a": M.roc_points(s, y), "b": M.roc_points(1 - s, y)})
    assert [t.name.split(" ")[0] for t in named.data] == ["chance", "a", "b"]
    det = charts.det_figure(M.det_points(s, y))
    assert any("EER" in (t.name or "") for t in det.data)
    hist = charts.score_histogram_figure(s, y, {"real_below": 0.3, "fake_at_or_above": 0.7})
    assert len(hist.data) == 2 and len(hist.layout.shapes) == 2
    data = charts.curves_by_group(s, y, ["x", "x", "z", "z", "z"])
    assert set(data["roc"]) == {"ALL", "x", "z"} and data["roc"]["x"]["fpr"] == []  # x has reals only

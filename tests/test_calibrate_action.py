"""core.review.actions.calibrate: one door for the CLI and the Calibration page, measured out of sample,
and guarded so a handful of labels cannot reach production."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.__main__ import main
from core.encoders.clip import ClipFeatures
from core.errors import CalibrationError
from core.model.checkpoint import load_checkpoint
from core.model.registry import ModelRegistry
from core.review.actions import calibrate as door

from .conftest import save_random_tiny, signed_in_app


def _csv(n: int = 160, seed: int = 0, scale: float = 4.0) -> bytes:
    """Over-confident logits: labels drawn with p = sigmoid(s), logits scale·s."""
    rng = np.random.default_rng(seed)
    s = rng.normal(0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-s))).astype(int)
    z = scale * s
    rows = ["logit,label"] + [f"{a:.6f},{'fake' if b else 'real'}" for a, b in zip(z, y)]
    return ("\n".join(rows) + "\n").encode()


@pytest.fixture()
def model(tmp_path):
    return save_random_tiny(tmp_path / "tiny.pt")


def test_cli_and_dashboard_give_the_same_fit_for_the_same_csv(tmp_path, model, monkeypatch, capsys):
    csv_bytes = _csv()
    path = tmp_path / "scores.csv"
    path.write_bytes(csv_bytes)
    assert main(["calibrate", "--model", str(model), "--data", str(path), "--method", "platt",
                 "--out", str(tmp_path / "cli.pt"), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)

    monkeypatch.setenv("LADEDA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LADEDA_MODEL", str(model))
    at = signed_in_app("calibration", timeout=120)
    at.radio(key="cal-source").set_value("Uploaded CSV (logit, label)")
    at.run()
    at.file_uploader(key="cal-csv").set_value(("scores.csv", csv_bytes, "text/csv"))
    at.run()
    at.selectbox(key="cal-method").set_value("platt")
    at.run()
    next(b for b in at.button if b.key == "cal-fit").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    next(b for b in at.button if b.key == "cal-save-activate").click()
    at.run()
    version = ModelRegistry(tmp_path / "data" / "models", base=model).active().version
    assert version is not None
    served = load_checkpoint(ModelRegistry(tmp_path / "data" / "models", base=model).path_of(version))
    assert served.calibration["params"] == pytest.approx(cli["params"])
    assert served.calibration["data_sha256"] == load_checkpoint(tmp_path / "cli.pt").calibration["data_sha256"]
    assert served.tiers["real_below"] == pytest.approx(cli["tiers"]["real_below"])
    assert served.tiers["fake_at_or_above"] == pytest.approx(cli["tiers"]["fake_at_or_above"])


def test_both_doors_refuse_logits_from_other_preprocessing(tmp_path, model):
    ckpt = load_checkpoint(model)
    bad = b"logit,label,preprocess_fingerprint\n1.0,fake,deadbeef0000\n-1.0,real,deadbeef0000\n"
    with pytest.raises(CalibrationError, match="preprocessing deadbeef0000"):
        door.data_from_csv(bad, ckpt, name="upload.csv")
    (tmp_path / "bad.csv").write_bytes(bad)
    assert main(["calibrate", "--model", str(model), "--data", str(tmp_path / "bad.csv"), "--method",
                 "temperature", "--out", str(tmp_path / "x.pt")]) == 2


def test_figures_are_out_of_sample_and_in_sample_is_optimistic(model):
    ckpt = load_checkpoint(model)
    fit = door.fit(door.data_from_csv(_csv(n=40, seed=3), ckpt), "platt", ckpt)
    assert fit.folds == 5 and fit.probs_out_of_fold is not None
    assert fit.tiers["measured_on"] == "out_of_fold"
    from core.calibration.metrics import nll

    assert fit.oos["nll"] > nll(fit.probs_in_sample, fit.data.labels)  # unseen labels are harder
    assert fit.record["metrics_out_of_fold"]["nll"] == pytest.approx(fit.oos["nll"])


def test_activation_is_refused_below_the_minimum_but_saving_works(tmp_path, model):
    ckpt = load_checkpoint(model)
    registry = ModelRegistry(tmp_path / "models", base=model)
    data = door.data_from_csv(b"logit,label\n" + b"".join(
        f"{v},{lab}\n".encode() for v, lab in [(2, "fake"), (1.5, "fake"), (1, "fake"), (0.5, "fake"),
                                               (-1, "real"), (-2, "real"), (0.2, "real")]), ckpt)
    fit = door.fit(data, "temperature", ckpt)
    assert fit.activation_refusal and "3 real and 4 fake" in fit.activation_refusal
    with pytest.raises(CalibrationError, match="Too few labels"):
        door.save_version(fit, registry, created_by="ana", activate=True)
    saved = door.save_version(fit, registry, created_by="ana", activate=False)
    assert registry.active().version is None
    with pytest.raises(CalibrationError, match="at least 30 of each"):
        door.activate_version(registry, saved.id, by="ana")
    assert registry.active().version is None


def test_a_fit_worse_than_the_serving_calibration_needs_a_confirmation(tmp_path):
    good = door.fit(door.data_from_csv(_csv(seed=1), load_checkpoint(save_random_tiny(tmp_path / "a.pt"))),
                    "platt", load_checkpoint(tmp_path / "a.pt"))
    serving = save_random_tiny(tmp_path / "served.pt", calibration=good.record, tiers=good.tiers)
    ckpt = load_checkpoint(serving)
    # the serving map is the true one; a step map fitted on the same labels does worse on labels it did not see
    worse = door.fit(door.data_from_csv(_csv(seed=1), ckpt), "isotonic", ckpt)
    assert worse.activation_refusal is None and worse.worse_than_active
    registry = ModelRegistry(tmp_path / "models", base=serving)
    with pytest.raises(CalibrationError, match="Confirm to activate"):
        door.save_version(worse, registry, created_by="ana", activate=True)
    version = door.save_version(worse, registry, created_by="ana", activate=True, confirm_worse=True)
    assert registry.active().version.id == version.id


def test_a_fused_model_is_calibrated_on_its_fused_logit_and_keeps_ladedas_own(tmp_path):
    """With CLIP fused, the verdicts are decided on the fused logit: the Calibration door fits that logit
    (recomputed from the stored features), stores the fit in the learned parts that serve it, and leaves
    LaDeDa's own calibration (which rule 7 reads) as it was."""
    from core.encoders.clip import load_encoder
    from core.learning.parts import served_value
    from core.paths import DEFAULT_MODEL
    from core.review.store import ReviewStore
    from core.scoring.analysis import analyse, learned_parts, record_analysis
    from core.scoring.detector import Detector

    from .conftest import graded_noise_png

    if load_encoder() is None:
        pytest.skip("the CLIP encoder is not installed (scripts/fetch_encoder.sh)")
    base = load_checkpoint(DEFAULT_MODEL)
    assert learned_parts(base).fuses and door.serving_space(base) == "fused"
    det = Detector(base, fast=False)
    rng = np.random.default_rng(5)
    with ReviewStore(tmp_path / "review.sqlite") as store:
        stored = {}
        for i in range(16):
            a = analyse(det, graded_noise_png(rng, i), name=f"i{i}.png", guardrails=False)
            assert a.served.used == "fused"
            record_analysis(store, a, name=f"i{i}.png", uploader="t")
            stored[a.score.sha256] = a.logit
            store.label(a.score.sha256, "fake" if i % 2 else "real", "ana")
        data = door.data_from_reviews(store, base)
    assert data.labels.size == 16 and "fused" in data.description
    # the same logits the verdicts were decided on (recomputed from float16 features)
    assert sorted(data.logits) == pytest.approx(sorted(stored.values()), abs=0.05)
    fit = door.fit(data, "platt", base, min_per_class=5)
    assert fit.record["context"]["logit"] == "fused"
    registry = ModelRegistry(tmp_path / "models", base=DEFAULT_MODEL)
    version = door.save_version(fit, registry, created_by="ana", activate=True, confirm_worse=True)
    new = load_checkpoint(registry.root / version.file)
    parts = learned_parts(new)
    assert parts.calibration["version"] == fit.record["version"] == version.calibration_version
    assert parts.tiers["real_below"] == pytest.approx(fit.tiers["real_below"])
    assert new.calibration["version"] == base.calibration["version"] and new.tiers == base.tiers
    # the base model keeps serving its own fused calibration until the version is used
    assert learned_parts(base).calibration["version"] == base.learning["calibration"]["version"]
    served = served_value(new, parts, ladeda_logit=0.3, ladeda_probability=0.5, ladeda_calibrated=True,
                          pooled=None, clip=ClipFeatures(embedding=np.ones(512, np.float32) / 512 ** 0.5,
                                                         cls=np.zeros(768, np.float32),
                                                         layers=np.zeros((12, 768), np.float32)),
                          clip_note=None)
    from core.calibration.calibrators import apply_record

    assert served.calibration_version == fit.record["version"]
    assert served.probability == pytest.approx(float(apply_record(fit.record, np.asarray([served.logit]))[0]))

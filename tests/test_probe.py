"""Stability probe on crafted models: one whose logit follows the image's fine detail (so a
downscale flips it), one whose logit is constant (so nothing can flip); storage with the
scoring, the queue reason, and the ``python -m core probe`` contract."""
from __future__ import annotations

import json

import pytest

from core.model.checkpoint import Checkpoint
from core.model.models import arch_record, build_model
from core.model.preprocess import official_spec
from core.scoring.detector import Detector
from core.scoring.policy import decide
from core.scoring.probe import VARIANT_NAMES, probe, record_probe, stored_probe, with_stability

from .conftest import encode, make_photo

CONTRACT_KEYS = {"file", "variants", "flips"}


def _detail_model(path, weight: float, bias: float):
    """Tiny-LaDeDa whose patch logit is ``weight * |right-diagonal residual| + bias``.

    The residual is the fine detail the model reads: downscaling removes it, so the
    logit depends on scale — the fragile kind of detector the probe is for.
    """
    sd = build_model("tiny", "right_diag").state_dict()
    for key, value in sd.items():
        if value.is_floating_point():
            value.zero_()
            if key.endswith("running_var") or key.endswith("bn1.weight") or key.endswith("bn2.weight"):
                value.fill_(1.0)
    sd["conv1.weight"][0, :, 0, 0], sd["conv1.weight"][1, :, 0, 0] = 1.0, -1.0  # residual, its negative
    for conv in ("conv2.weight", "layer1.0.conv2.weight"):  # 3×3 convs pass each channel through
        sd[conv][0, 0, 1, 1] = sd[conv][1, 1, 1, 1] = 1.0
    sd["layer1.0.conv1.weight"][0, 0, 0, 0] = sd["layer1.0.conv1.weight"][1, 1, 0, 0] = 1.0
    sd["fc.weight"][0, :2] = weight  # relu(r) + relu(-r) = |r|
    sd["fc.bias"][0] = bias
    Checkpoint(arch=arch_record("tiny"), spec=official_spec("right_diag"), state_dict=sd,
               provenance={"source": "test: crafted scale-dependent model"}).save(path)
    return path


def _constant_model(path, logit: float):
    sd = build_model("tiny", "right_diag").state_dict()
    sd["fc.weight"].zero_()
    sd["fc.bias"].fill_(logit)
    Checkpoint(arch=arch_record("tiny"), spec=official_spec("right_diag"), state_dict=sd,
               provenance={"source": "test: constant model"}).save(path)
    return path


@pytest.fixture(scope="module")
def photo() -> bytes:
    return encode(make_photo(320, 240, seed=3), "PNG")


def make_fragile(folder, photo: bytes):
    """The detail model, its bias set halfway between ``photo``'s logit and its ×0.5 copy's (a path)."""
    meter = Detector.load(_detail_model(folder / "meter.pt", 1.0, 0.0), fast=False)
    first = probe(meter, photo, name="photo.png")
    half = {v.name: v for v in first.variants}["downscale_0.5"]
    assert first.original.logit > half.logit + 0.05, "the residual must shrink when the image is downscaled"
    mid = 0.5 * (first.original.logit + half.logit)
    k = 6.0 / (first.original.logit - half.logit)  # ±3 logits around the midpoint: clearly fake / clearly real
    return _detail_model(folder / "fragile.pt", k, -k * mid)


@pytest.fixture(scope="module")
def fragile(tmp_path_factory, photo):
    return Detector.load(make_fragile(tmp_path_factory.mktemp("probe-models"), photo), fast=False)


def test_probe_flags_the_flip_of_a_scale_dependent_model(fragile, photo):
    result = probe(fragile, photo, name="photo.png")
    out = result.to_json()
    assert CONTRACT_KEYS <= set(out)
    assert [v["name"] for v in out["variants"]] == list(VARIANT_NAMES)
    assert all({"name", "probability", "tier"} <= set(v) for v in out["variants"])
    assert out["original"]["tier"] == "fake" and out["original"]["probability"] >= 0.8
    half = {v["name"]: v for v in out["variants"]}["downscale_0.5"]
    assert half["tier"] == "real" and half["flipped"]
    assert "downscale_0.5" in out["flips"] and not result.stable
    assert "downscale_0.5: fake → real" in result.summary()
    # every flip is a variant whose tier differs from the original's, and only those
    assert out["flips"] == [v["name"] for v in out["variants"] if v["tier"] != out["original"]["tier"]]


def test_a_flip_sends_the_verdict_to_review_with_a_reason(fragile, photo):
    result = probe(fragile, photo)
    decision = decide(result.original.probability, fragile.checkpoint.tiers)
    assert decision.tier == "fake"
    after = with_stability(decision, result)
    assert after.tier == "review" and after.base_tier == "fake"
    assert "Stability probe" in after.reasons[-1] and "downscale_0.5" in after.reasons[-1]
    assert decision.tier == "fake"  # the original decision is not mutated


def test_a_constant_model_never_flips(tmp_path, photo):
    det = Detector.load(_constant_model(tmp_path / "const.pt", 3.0), fast=False)
    result = probe(det, photo)
    assert result.flips == [] and result.stable
    assert {v.tier for v in result.variants} == {"fake"} and result.max_shift < 1e-6
    decision = decide(result.original.probability, None)
    assert with_stability(decision, result) is decision


def test_variants_too_small_to_score_are_skipped_not_flipped(tmp_path):
    det = Detector.load(_constant_model(tmp_path / "const.pt", -3.0), fast=False)
    result = probe(det, encode(make_photo(24, 24, seed=1), "PNG"))
    by_name = {v.name: v for v in result.variants}
    assert by_name["downscale_0.5"].skipped and by_name["downscale_0.5"].probability is None
    assert by_name["jpeg_q90"].probability is not None
    assert result.flips == []


def test_record_probe_stores_it_with_the_scoring_and_queues_a_flip(tmp_path, fragile, photo):
    from core.model.registry import weights_key
    from core.review.store import ReviewStore
    from core.scoring.analysis import analyse, record_analysis

    store = ReviewStore(tmp_path / "review.sqlite")
    analysis = analyse(fragile, photo, name="photo.png")
    assert analysis.tier == "fake"  # clear tier: not queued by the scoring itself
    scoring_id = record_analysis(store, analysis, name="photo.png", uploader="ana")
    sha = analysis.score.sha256
    assert store.item(sha)["queue_state"] is None
    key = weights_key(fragile.checkpoint)
    rec = record_probe(store, probe(fragile, photo, name="photo.png"), model_key=key, by="ana")
    assert rec["scoring_id"] == scoring_id and rec["queued"] and rec["queue_state"] == "queued"
    item = store.item(sha)
    assert item["queue"]["reason"].startswith("stability probe: ") and "downscale_0.5" in item["queue"]["reason"]
    stored = stored_probe(store, sha, key)
    assert stored["flips"] == [v["name"] for v in stored["variants"] if v["flipped"]]
    assert "downscale_0.5" in stored["flips"]
    assert stored["scoring_id"] == scoring_id and stored["probed_by"] == "ana"
    assert stored_probe(store, sha, "another-model") is None
    assert stored_probe(store, sha, key, model_sha256=fragile.checkpoint.sha256)["flips"] == stored["flips"]
    assert stored_probe(store, sha, key, model_sha256="c" * 64) is None  # another calibration of these weights
    store.close()


def test_a_labelled_item_is_not_queued_again(tmp_path, fragile, photo):
    from core.model.registry import weights_key
    from core.review.store import ReviewStore
    from core.scoring.analysis import analyse, record_analysis

    store = ReviewStore(tmp_path / "review.sqlite")
    analysis = analyse(fragile, photo)
    record_analysis(store, analysis, name="photo.png", uploader=None)
    store.label(analysis.score.sha256, "fake", "ana")
    rec = record_probe(store, probe(fragile, photo), model_key=weights_key(fragile.checkpoint), by="bo")
    assert not rec["queued"] and rec["queue_state"] == "labelled"
    store.close()


def test_cli_probe_json_contract_and_db(tmp_path, fragile, photo, capsys):
    from core.__main__ import main

    f = tmp_path / "photo.png"
    f.write_bytes(photo)
    assert main(["probe", str(f), "--json", "--model", str(fragile.checkpoint.path)]) == 0
    out = json.loads(capsys.readouterr().out.strip())
    assert CONTRACT_KEYS <= set(out) and out["file"] == str(f)
    assert "downscale_0.5" in out["flips"]
    assert all({"name", "probability", "tier"} <= set(v) for v in out["variants"])

    db = tmp_path / "review.sqlite"
    assert main(["probe", str(f), "--model", str(fragile.checkpoint.path), "--db", str(db), "--create",
                 "--by", "ana"]) == 0
    text = capsys.readouterr().out
    assert "FLIP" in text and "queued for review" in text
    from core.review.store import ReviewStore

    with ReviewStore(db) as store:
        assert store.item(out["sha256"])["queue_state"] == "queued"


def test_cli_probe_unreadable_file_is_a_message(tmp_path, fragile, capsys):
    from core.__main__ import main

    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not an image")
    assert main(["probe", str(bad), "--json", "--model", str(fragile.checkpoint.path)]) == 1
    out = json.loads(capsys.readouterr().out.strip())
    assert "Not a recognised image format" in out["error"]

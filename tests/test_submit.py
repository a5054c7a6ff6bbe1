"""The upload door (``core.review.actions.submit``) and the decision door (``decide``) on the real
bundled model, a real SQLite store and real images under ``tmp_path``."""
from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

import core.imageio
import core.model.preprocess
import core.scoring.detector
from core.errors import DetectorError, ImageTooSmallError, UnsupportedImageError
from core.paths import DEFAULT_MODEL
from core.review import evidence as evidence_mod
from core.review.actions import decide, submit as submit_mod
from core.review.store import ReviewStore
from core.scoring.detector import Detector

from .conftest import encode, make_photo


@pytest.fixture(scope="module")
def det():
    return Detector.load(DEFAULT_MODEL, fast=False)


@pytest.fixture()
def store(tmp_path):
    return ReviewStore(tmp_path / "review.sqlite")


def _png(seed=0, size=(160, 120)) -> bytes:
    return encode(make_photo(*size, seed=seed), "PNG")


def test_one_upload_decodes_hashes_and_preprocesses_once(det, store, monkeypatch):
    data = _png(1)
    counts = {"decode": 0, "sha256_of_upload": 0, "preprocess": 0}
    real_decode, real_prepare, real_sha = core.scoring.detector.decode_image, core.scoring.detector.to_model_input, hashlib.sha256

    def decode(*a, **k):
        counts["decode"] += 1
        return real_decode(*a, **k)

    def prepare(*a, **k):
        counts["preprocess"] += 1
        return real_prepare(*a, **k)

    def sha(data_arg=b"", *a, **k):
        if bytes(data_arg) == data:
            counts["sha256_of_upload"] += 1
        return real_sha(data_arg, *a, **k)

    monkeypatch.setattr(core.scoring.detector, "decode_image", decode)
    monkeypatch.setattr(core.scoring.detector, "to_model_input", prepare)
    monkeypatch.setattr(hashlib, "sha256", sha)

    sub = submit_mod.submit(det, data, "one.png", store, "ana")
    ev = sub.evidence
    # GradCAM for LaDeDa comes from the stored map: no further preprocessing either
    assert ev.head_bias is not None and submit_mod.add_gradcam(det, sub, store) is ev
    assert counts == {"decode": 1, "sha256_of_upload": 1, "preprocess": 1}, counts
    assert sub.scoring_id is not None and not sub.pending and not sub.reused


def test_reupload_is_answered_from_the_store_without_a_model_pass(det, store, monkeypatch):
    data = _png(2)
    first = submit_mod.submit(det, data, "a.png", store, "ana")
    passes = {"n": 0}
    real = Detector.forward

    def counted(self, tensor):
        passes["n"] += 1
        return real(self, tensor)

    monkeypatch.setattr(Detector, "forward", counted)
    again = submit_mod.submit(det, data, "a-again.png", store, "bob")
    assert again.reused and passes["n"] == 0
    assert again.evidence.tier == first.evidence.tier and again.evidence.probability == first.evidence.probability
    np.testing.assert_allclose(again.evidence.patch_logits, first.evidence.patch_logits, atol=1e-2)
    assert len(store.item(first.sha256)["scorings"]) == 1  # nothing re-recorded
    forced = submit_mod.submit(det, data, "a.png", store, "ana", rescore=True)
    assert not forced.reused and passes["n"] >= 1 and len(store.item(first.sha256)["scorings"]) == 2


def test_deferred_submit_gives_a_verdict_first_and_records_only_when_finished(det, store):
    data = _png(3)
    sub = submit_mod.submit(det, data, "d.png", store, "ana", defer=True)
    assert sub.pending and sub.evidence.guardrails is None and sub.scoring_id is None
    assert sub.evidence.decision["tier"] in ("real", "review", "fake")
    with pytest.raises(Exception):
        store.item(sub.sha256)  # nothing stored before the second pass
    done = submit_mod.finish(det, sub, store, uploader="ana")
    assert not done.pending and done.scoring_id is not None and done.evidence.guardrails is not None
    stored = evidence_mod.load(store, sub.sha256, submit_mod.model_key_of(det))
    assert stored is not None and stored.complete and stored.decision == done.evidence.decision
    assert done.evidence.guardrails["quality"]["effective_resolution"] == [160, 120]


def test_a_review_tier_upload_is_queued_and_its_state_reported(det, store):
    crushed = encode(make_photo(200, 150, seed=4), "JPEG", quality=10)  # low quality: never real, never fake
    sub = submit_mod.submit(det, crushed, "crushed.jpg", store, "ana")
    assert sub.evidence.tier == "review" and sub.queue_state == "queued"


def test_evidence_for_says_when_the_active_model_did_not_make_it(det, store, tmp_path):
    sub = submit_mod.submit(det, _png(5), "s.png", store, "ana")
    ev, stale = submit_mod.evidence_for(store, det, sub.sha256)
    assert ev is not None and not stale
    from .conftest import save_random_tiny

    other = Detector.load(save_random_tiny(tmp_path / "tiny.pt"), fast=False)
    ev2, stale2 = submit_mod.evidence_for(store, other, sub.sha256)
    assert ev2 is not None and stale2 and ev2.model_sha256 == det.checkpoint.sha256
    re = submit_mod.rescore(other, store, sub.sha256, uploader="ana")
    ev3, stale3 = submit_mod.evidence_for(store, other, sub.sha256)
    assert not re.reused and not stale3 and ev3.model_sha256 == other.checkpoint.sha256
    # Tiny's default GradCAM layer is not the patch grid: the grid is computed once, then stored
    assert ev3.head_bias is None
    grid_ev = submit_mod.add_gradcam(other, re, store)
    assert grid_ev.gradcam_grid is not None
    assert evidence_mod.load(store, sub.sha256, submit_mod.model_key_of(other)).gradcam_grid is not None


@pytest.mark.parametrize("size", [(8000, 40), (40, 8000), (5, 5)])
def test_too_thin_or_small_images_get_a_specific_typed_error(det, store, size):
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 130, 140)).save(buf, "PNG")
    with pytest.raises(ImageTooSmallError, match="too thin or too small to analyse"):
        submit_mod.submit(det, buf.getvalue(), "thin.png", store, "ana")


def test_bad_bytes_are_a_typed_error(det, store):
    with pytest.raises(UnsupportedImageError):
        submit_mod.submit(det, b"not an image at all", "x.png", store)


def test_decisions_name_their_item_and_undo_returns_auto_claimed_items(det, store):
    shas = []
    for i in range(3):
        sub = submit_mod.submit(det, encode(make_photo(200, 150, seed=10 + i), "JPEG", quality=10), f"q{i}.jpg",
                                store, "ana")
        shas.append(sub.sha256)
    first = decide.claim(store, "rev")
    assert first.sha256 in shas
    out = decide.label(store, first.sha256, "fake", "rev", note="n", leased=True)
    assert out.message == f"Labelled {out.name} as fake."
    auto = decide.claim(store, "rev")  # auto-next
    assert auto.sha256 != first.sha256
    undone = decide.undo(store, "rev")
    assert undone.sha256 == first.sha256 and undone.next_sha256 == first.sha256
    assert [r["sha256"] for r in undone.released] == [auto.sha256]
    assert {x["sha256"] for x in store.leases("rev")} == {first.sha256}
    assert (store.item(auto.sha256)["queue"] or {})["state"] == "queued"
    with pytest.raises(decide.DecisionError, match="no longer leased"):
        decide.label(store, auto.sha256, "real", "rev", leased=True)


def test_the_model_gate_reports_places_and_survives_a_waiter_that_gives_up():
    import threading
    import time

    gate = submit_mod.ModelGate()
    seen: list[int] = []
    release = threading.Event()

    def holder():
        with gate.turn():
            release.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    time.sleep(0.1)

    def quitter(ahead):
        raise KeyboardInterrupt  # the session went away while waiting

    with pytest.raises(KeyboardInterrupt):
        with gate.turn(quitter):
            pass
    waiter = threading.Thread(target=lambda: gate.turn(seen.append).__enter__())
    waiter.start()
    time.sleep(0.3)
    release.set()
    t.join(5)
    waiter.join(5)
    assert seen == [1] and not waiter.is_alive()


def test_the_two_phase_upload_decides_like_one_phase_scoring(det, store):
    """Inspect's verdict (submit with defer, then finish) uses the served (fused) tiers, the OOD guard and
    the parts' agreement, exactly like ``analyse`` (``score``): one decision for the same bytes."""
    from core.scoring.analysis import analyse

    for seed in (3, 4):
        data = encode(make_photo(320, 240, seed=seed), "JPEG", quality=92)
        one = analyse(det, data, name=f"p{seed}.jpg")
        sub = submit_mod.submit(det, data, f"p{seed}.jpg", store, "ana", defer=True)
        sub = submit_mod.finish(det, sub, store, uploader="ana")
        assert sub.evidence.tier == one.tier
        assert sub.evidence.decision["reasons"] == one.reasons
        assert sub.evidence.decision["thresholds"] == one.decision.thresholds


# ---------------------------------------------------------------------------
# the verdict first: CLIP's pass decides the provisional card, LaDeDa's follows
# ---------------------------------------------------------------------------
def test_verdict_first_is_clips_look_then_the_same_answer_as_one_call(det, tmp_path, monkeypatch):
    """With the encoder installed the provisional card is one CLIP pass fused with LaDeDa's term at its
    prior (no LaDeDa pass yet, no patch map); finish runs LaDeDa once and reuses CLIP's features, and the
    final evidence equals a one-call submit of the same bytes."""
    from core.encoders.clip import encoder_status, load_encoder
    from core.scoring.analysis import LADEDA_PRIOR_LOGIT

    encoder = load_encoder()
    if encoder is None:
        pytest.skip(f"the CLIP encoder is not installed ({encoder_status()})")
    calls = {"clip": 0, "ladeda": 0}
    real_encode, real_score = type(encoder).encode, Detector.score

    def encode_spy(self, *a, **k):
        calls["clip"] += 1
        return real_encode(self, *a, **k)

    def score_spy(self, *a, **k):
        calls["ladeda"] += 1
        return real_score(self, *a, **k)

    monkeypatch.setattr(type(encoder), "encode", encode_spy)
    monkeypatch.setattr(Detector, "score", score_spy)
    data = _png(11, (200, 150))
    store = ReviewStore(tmp_path / "a" / "review.sqlite")
    sub = submit_mod.submit(det, data, "first.png", store, "ana", defer=True)
    assert calls == {"clip": 1, "ladeda": 0}  # the verdict's critical path: decode + one CLIP pass
    assert sub.pending and sub.first is not None and not sub.evidence.has_patch_map
    comps = sub.evidence.extra["components"]
    assert comps["ladeda"]["pending"] and comps["ladeda"]["logit"] == LADEDA_PRIOR_LOGIT
    assert sub.evidence.tier in ("real", "review", "fake") and sub.provisional_tier == sub.evidence.tier
    assert store.latest_scoring(sub.sha256) is None  # a provisional verdict is never stored
    with pytest.raises(DetectorError, match="still running"):
        submit_mod.add_gradcam(det, sub, store)
    done = submit_mod.finish(det, sub, store, uploader="ana")
    assert calls == {"clip": 1, "ladeda": 1}  # nothing computed twice
    assert not done.pending and done.evidence.has_patch_map and done.evidence.complete
    assert done.provisional_tier == sub.evidence.tier and "pending" not in done.evidence.extra["components"]["ladeda"]
    stored = store.latest_scoring(done.sha256)
    assert stored["probability"] == pytest.approx(done.evidence.probability) and stored["tier"] == done.evidence.tier

    one = submit_mod.submit(det, data, "first.png", ReviewStore(tmp_path / "b" / "review.sqlite"), "ana")
    assert one.first is None and one.provisional_tier is None  # one call: no provisional card to show
    assert one.evidence.probability == pytest.approx(done.evidence.probability, abs=1e-6)
    assert one.evidence.tier == done.evidence.tier and one.evidence.reasons == done.evidence.reasons


def test_without_the_encoder_the_verdict_waits_for_ladeda(det, tmp_path, monkeypatch):
    import core.encoders.clip as clip_mod

    monkeypatch.setattr(clip_mod, "load_encoder", lambda *a, **k: None)
    sub = submit_mod.submit(det, _png(12), "plain.png", ReviewStore(tmp_path / "review.sqlite"), "ana", defer=True)
    assert sub.first is None and sub.evidence.has_patch_map and sub.pending


def test_verdict_first_refuses_what_ladedas_pass_would_refuse(det, tmp_path):
    """A banner the native-resolution spec makes thinner than one patch gets no provisional verdict from
    CLIP: it is refused at once, with the same typed message as LaDeDa's pass gives."""
    thin = encode(Image.new("RGB", (8000, 40), (90, 120, 150)), "PNG")
    with pytest.raises(ImageTooSmallError, match="too thin or too small"):
        submit_mod.submit(det, thin, "banner.png", ReviewStore(tmp_path / "review.sqlite"), "ana", defer=True)

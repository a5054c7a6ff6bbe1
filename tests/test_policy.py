"""Every rule of the tier policy, on constructed guardrail reports."""
from __future__ import annotations

import pytest

from core.scoring import policy
from core.scoring.guardrails import GuardrailReport
from core.scoring.guardrails.faces import Face
from core.scoring.guardrails.metadata import MetadataReport
from core.scoring.guardrails.quality import QualityReport
from core.scoring.policy import BLUR_THRESHOLD, DEFAULT_TIERS, FACE_MIN_SIDE, LOW_JPEG_QUALITY, decide

TIERS = {"real_below": 0.3, "fake_at_or_above": 0.7}


def report(*, faces=None, jpeg=95.0, blur=300.0, size=(512, 512), generator=False, camera=False):
    q = QualityReport(blur=blur, blurry=blur < BLUR_THRESHOLD, jpeg_quality=jpeg,
                      low_jpeg_quality=jpeg is not None and jpeg < LOW_JPEG_QUALITY,
                      width=size[0], height=size[1], model_input=(256, 256), upscaled=min(size) < 256,
                      heavily_upscaled=min(size) < 128)
    m = MetadataReport(exif={"make": "Canon"} if camera else {},
                       generator_hints=["PNG text chunk 'parameters' holds generation parameters"] if generator else [])
    return GuardrailReport(faces=faces if faces is not None else [Face((0, 0, 10, 10), 0.9, score=0.1)],
                           quality=q, metadata=m)


def test_base_tiers_from_thresholds():
    assert decide(0.1, TIERS, report()).tier == "real"
    assert decide(0.5, TIERS, report()).tier == "review"
    assert decide(0.7, TIERS, report()).tier == "fake"
    d = decide(0.9, None, None)
    assert d.tier == "fake" and d.thresholds == DEFAULT_TIERS and any("default thresholds" in r for r in d.reasons)


def test_low_quality_is_never_clearly_fake_nor_clearly_real():
    for kwargs in ({"jpeg": 18.0}, {"blur": 5.0}, {"size": (64, 64)}):
        fake = decide(0.95, TIERS, report(**kwargs))
        real = decide(0.05, TIERS, report(**kwargs))
        assert fake.tier == "review" and fake.base_tier == "fake" and fake.changed_by_guardrails
        assert real.tier == "review"
        assert any("Low quality" in r for r in fake.reasons)


def test_thumbnail_for_a_native_resolution_model_goes_to_review():
    small = report(size=(64, 64))
    small.quality.model_input, small.quality.upscaled, small.quality.heavily_upscaled = None, False, False
    small.quality.too_small = True
    for p in (0.02, 0.98):
        d = decide(p, TIERS, small)
        assert d.tier == "review" and any("tiny image (64×64, shorter side below 128 px" in r for r in d.reasons)


def test_one_fake_face_sends_a_real_looking_image_to_review():
    faces = [Face((0, 0, 50, 50), 0.9, score=0.1), Face((60, 0, 110, 50), 0.8, score=0.93)]
    d = decide(0.1, TIERS, report(faces=faces))
    assert d.tier == "review" and any("Face 2 of 2" in r for r in d.reasons)
    assert decide(0.9, TIERS, report(faces=faces)).tier == "fake"


def test_generator_metadata_is_evidence_not_a_verdict():
    d = decide(0.1, TIERS, report(generator=True))
    assert d.tier == "review" and any("generator" in r.lower() for r in d.reasons)
    assert decide(0.5, TIERS, report(generator=True)).tier == "review"  # never promoted to fake
    assert decide(0.9, TIERS, report(generator=True)).tier == "fake"


def test_no_face_is_noted_not_blocked():
    d = decide(0.1, TIERS, report(faces=[]))
    assert d.tier == "real" and any("No face found" in r for r in d.reasons)


def test_camera_exif_is_reported_as_evidence_only():
    d = decide(0.9, TIERS, report(camera=True))
    assert d.tier == "fake" and any("EXIF names a camera" in r for r in d.reasons)


def test_invalid_tiers_fall_back_to_defaults_with_a_reason():
    d = decide(0.5, {"real_below": 0.9, "fake_at_or_above": 0.1}, report())
    assert d.thresholds == DEFAULT_TIERS and any("not valid" in r for r in d.reasons)
    d = decide(0.5, {"real_below": "x", "fake_at_or_above": 0.8}, None)
    assert d.thresholds == DEFAULT_TIERS


def test_calibrated_tiers_are_used_without_the_default_note():
    d = decide(0.25, TIERS, report())
    assert d.tier == "real" and d.thresholds == TIERS
    assert not any("default thresholds" in r for r in d.reasons)


def test_low_quality_in_the_review_band_stays_review_with_a_note():
    d = decide(0.5, TIERS, report(jpeg=12.0))
    assert d.tier == "review" and not d.changed_by_guardrails
    assert any("less reliable" in r and "quality 12" in r for r in d.reasons)


def test_tiny_faces_do_not_move_the_tier():
    tiny = [Face((0, 0, FACE_MIN_SIDE - 1, FACE_MIN_SIDE - 1), 0.9, score=0.99)]
    assert decide(0.1, TIERS, report(faces=tiny)).tier == "real"


def test_fake_face_in_a_review_band_image_is_named():
    faces = [Face((0, 0, 80, 80), 0.9, score=0.95)]
    d = decide(0.5, TIERS, report(faces=faces))
    assert d.tier == "review" and any("Face 1 of 1 scores 0.95" in r for r in d.reasons)


def test_editor_and_screenshot_are_notes_only():
    r = report()
    r.metadata.editor_hints.append("EXIF software 'GIMP 2.10' mentions 'gimp'")
    r.quality.screenshot_hints.extend(["lossless PNG without camera metadata", "size 1920×1080 is a common screen"])
    for p, tier in ((0.1, "real"), (0.9, "fake")):
        d = decide(p, TIERS, r)
        assert d.tier == tier
        assert any("editing software" in x for x in d.reasons) and any("screenshot" in x for x in d.reasons)


def test_policy_only_ever_moves_towards_review():
    faces_options = ([], [Face((0, 0, 80, 80), 0.9, score=0.1)], [Face((0, 0, 80, 80), 0.9, score=0.99)])
    for p in (0.0, 0.1, 0.29, 0.3, 0.5, 0.69, 0.7, 0.95, 1.0):
        for jpeg in (None, 10.0, 95.0):
            for size in ((64, 64), (512, 512)):
                for gen in (False, True):
                    for faces in faces_options:
                        d = decide(p, TIERS, report(faces=list(faces), jpeg=jpeg, size=size, generator=gen))
                        assert d.tier in (d.base_tier, "review")
                        assert d.reasons and all(isinstance(x, str) and x.endswith((".", ")")) for x in d.reasons)
                        assert set(d.to_json()) >= {"tier", "reasons", "base_tier"}


def test_thresholds_live_in_the_policy_module():
    import core.scoring.guardrails.quality as quality
    import core.scoring.policy as policy

    assert quality.BLUR_THRESHOLD is policy.BLUR_THRESHOLD
    assert quality.LOW_JPEG_QUALITY is policy.LOW_JPEG_QUALITY
    assert quality.UPSCALE_FRACTION is policy.UPSCALE_FRACTION
    assert report(jpeg=policy.LOW_JPEG_QUALITY - 1).quality.low_jpeg_quality


def _fused(p_ladeda: float, p_clip: float) -> dict:
    return {"used": "fused", "ladeda": {"logit": 0.0, "probability": p_ladeda},
            "clip": {"logit": 0.0, "probability": p_clip}, "fused": {"logit": 0.0, "probability": 0.5}}


@pytest.mark.parametrize("p, p_ladeda, p_clip, tier", [
    (0.95, 0.90, 0.80, "fake"),    # both parts agree: the clear verdict stands
    (0.95, 0.30, 0.90, "review"),  # LaDeDa says real: not clearly fake
    (0.95, 0.90, 0.40, "review"),  # CLIP says real
    (0.05, 0.10, 0.20, "real"),
    (0.05, 0.10, 0.70, "review"),  # CLIP says fake: not clearly real
    (0.05, 0.60, 0.20, "review"),
    (0.50, 0.90, 0.10, "review"),  # already review: stays, without the disagreement sentence
    (0.95, 0.61, 0.90, "fake"),    # both at least AGREEMENT_MARGIN (10 points) beyond 0.5
    (0.95, 0.59, 0.90, "review"),  # LaDeDa leans fake, but barely
    (0.05, 0.39, 0.20, "real"),
    (0.05, 0.41, 0.20, "review"),  # LaDeDa barely leans real: the fakes called clearly real looked like this
])
def test_two_parts_that_disagree_give_no_clear_verdict(p, p_ladeda, p_clip, tier):
    d = policy.decide(p, TIERS, components=_fused(p_ladeda, p_clip))
    assert d.tier == tier
    said = any("do not both lean clearly" in r for r in d.reasons)
    assert said == (d.base_tier != "review" and tier == "review")


def test_disagreement_needs_a_fused_value():
    lad_only = {"used": "ladeda", "ladeda": {"probability": 0.3}, "clip": None}
    assert policy.decide(0.95, TIERS, components=lad_only).tier == "fake"
    assert not policy.parts_disagree("review", 0.1, 0.9)
    assert not policy.parts_disagree("fake", 0.9, None)

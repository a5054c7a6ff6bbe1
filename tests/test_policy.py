"""Every rule of the tier policy, on constructed guardrail reports."""
from __future__ import annotations

from core.guardrails import GuardrailReport
from core.guardrails.faces import Face
from core.guardrails.metadata import MetadataReport
from core.guardrails.quality import QualityReport
from core.policy import DEFAULT_TIERS, decide

TIERS = {"real_below": 0.3, "fake_at_or_above": 0.7}


def report(*, faces=None, jpeg=95.0, blur=300.0, size=(512, 512), generator=False, camera=False):
    q = QualityReport(blur=blur, blurry=blur < 40, jpeg_quality=jpeg, low_jpeg_quality=jpeg is not None and jpeg < 40,
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

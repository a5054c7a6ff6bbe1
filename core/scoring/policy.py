"""The tier policy: calibrated probability + tier thresholds + guardrails → tier and reasons.

Every threshold the policy uses is a constant in :mod:`core.scoring.thresholds`,
which the guardrails read too: guardrails measure, this module decides, and
neither imports the other. Rules, in order:

1. Base tier from the checkpoint's tiers on the calibrated probability p:
   p < real_below → ``real``; p ≥ fake_at_or_above → ``fake``; else ``review``.
   A model without (valid) calibrated tiers uses ``DEFAULT_TIERS`` and says so.
2. Low quality — no sharp detail anywhere (blur < ``BLUR_THRESHOLD``), a JPEG
   below quality ``LOW_JPEG_QUALITY``, a shorter side below
   ``UPSCALE_FRACTION`` of the model input, or a shorter side below
   ``MIN_IMAGE_SIDE`` pixels whatever the model input — is never ``fake`` *and* never
   ``real``. Compression, blur and upscaling erase the local traces the model
   reads: a "fake" call on such an image is likely an artefact of the damage,
   and a "real" call is exactly how a degraded fake slips through (the missing
   traces look like "no generator traces"). Both go to ``review`` with the
   reason. The cost is review volume on poor uploads, which is the right
   place for an analyst's eyes; a clear verdict on them would be a guess.
3. A face (at least ``FACE_MIN_SIDE`` px) whose own crop scores at or above the
   fake threshold while the whole image is not ``fake`` sends the image to
   ``review``: one generated face in a group photo can hide in the image mean.
4. Generator metadata is evidence: it moves ``real`` to ``review`` and is
   listed as a reason otherwise; it never makes ``fake`` on its own (metadata
   is easily written, copied or stripped).
5. Noted without changing the tier: no face found (LaDeDa is not a face
   model), editing software, camera EXIF, screenshot hints.
6. The out-of-distribution guard (``ood``): an image unlike what the model was
   calibrated on gets no clear verdict, only review.
7. Two opinions that must both lean clearly: when the served value fuses LaDeDa and
   CLIP, a clear verdict needs both parts on its side of 0.5 by at least
   ``AGREEMENT_MARGIN`` (LaDeDa's own calibrated probability, CLIP's
   probability). On sources neither part saw, one of them is often confidently
   wrong, and which one differs by source; a part that contradicts the verdict,
   or barely leans its way, is the cheapest warning there is. Because this rule
   catches the contradicted calls, the fused tiers' FNR target is looser
   (:data:`core.learning.base.FUSED_TIER_TARGETS`). Measured
   leave-one-source-out (``benchmarks/unseen_sources.py``; margin and targets
   chosen on the held-out sources' train+val images): with the bundled LaDeDa9
   the clear verdicts that are right went from 39 % (no rule) and 67 % (rule
   without margin) to 91 % (20 of 22) on the held-out test images at 20 %
   clear, with no real called clearly fake; with the official WildRF Tiny
   (fair for every part) from 25 % to 40 % (4 of 10) at 9 % clear, 4 % (2 of
   52) of reals called clearly fake. Re-checked when the CLIP head began to
   weigh its training sources equally: on the tuning images 10 points still
   gives LaDeDa9 22 % clear at 86 % right (7.5 points: 26 % at 79.8 %).
8. Content Credentials (``core.scoring.guardrails.provenance``), applied last. A C2PA
   manifest whose signature is valid, whose hash binding still matches the image and
   whose signer chains to the team's trust list, and which declares the whole image
   ``trainedAlgorithmicMedia`` (``ai_generated``), makes ``fake`` whatever the scores
   say: a signed claim bound to these very bytes is stronger evidence than any
   detector. The reason comes first and names the signer; the detector's reasons stay
   beneath. A verified claim of AI-assisted editing (``ai_edited``) sends the image to
   ``review`` ("partly generated"); a manifest that does not verify (``unverified``:
   invalid signature, edited after signing, signer not on the trust list, remote or
   unreadable) sends it to ``review`` with the reason, since its claim cannot be
   weighed either way. A verified manifest with no AI claim (a capture) leaves the
   detector's verdict, except that it contradicts ``fake`` (review). No manifest
   proves nothing.

Apart from rule 8's verified ``ai_generated`` the policy only ever moves a tier to
``review``; it never creates a ``fake`` or a ``real`` that the thresholds did not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from core.scoring.guardrails import GuardrailReport

from core.scoring.thresholds import (  # noqa: F401 - re-exported: the policy's rules are stated with these
    BLUR_THRESHOLD, DEFAULT_TIERS, FACE_MIN_SIDE, LOW_JPEG_QUALITY, MIN_IMAGE_SIDE, UPSCALE_FRACTION,
)

TIER_LABELS = {"real": "clearly real", "review": "needs review", "fake": "clearly fake"}


@dataclass
class Decision:
    tier: str  #: "real", "review" or "fake"
    reasons: list[str] = field(default_factory=list)
    base_tier: str = "review"  #: the tier from the thresholds alone
    thresholds: dict[str, float] = field(default_factory=dict)
    #: "provenance" when the file's Content Credentials set the tier (rule 8), else None.
    decided_by: str | None = None

    @property
    def changed_by_guardrails(self) -> bool:
        return self.tier != self.base_tier

    def to_json(self) -> dict[str, Any]:
        return {"tier": self.tier, "base_tier": self.base_tier, "reasons": list(self.reasons),
                "thresholds": dict(self.thresholds), "changed_by_guardrails": self.changed_by_guardrails,
                "decided_by": self.decided_by}


def base_tier(p: float, tiers: dict[str, Any]) -> str:
    """The tier from the thresholds alone (one definition, shared with ``core.calibration.tiers``)."""
    from core.calibration.tiers import tier_of

    return tier_of(p, tiers)


def _valid_tiers(tiers: dict[str, Any] | None) -> tuple[dict[str, float], str | None]:
    """The thresholds to use, and a reason when the defaults replace missing or broken ones."""
    if not tiers or "real_below" not in tiers or "fake_at_or_above" not in tiers:
        return dict(DEFAULT_TIERS), (
            f"This model has no calibrated tiers; default thresholds {DEFAULT_TIERS['real_below']:.2f} / "
            f"{DEFAULT_TIERS['fake_at_or_above']:.2f} are used.")
    try:
        lo, hi = float(tiers["real_below"]), float(tiers["fake_at_or_above"])
    except (TypeError, ValueError):
        lo = hi = math.nan
    if not (0.0 <= lo <= hi <= 1.0):
        return dict(DEFAULT_TIERS), (
            f"The model's tiers ({tiers.get('real_below')!r} / {tiers.get('fake_at_or_above')!r}) are not valid "
            f"thresholds; default thresholds {DEFAULT_TIERS['real_below']:.2f} / "
            f"{DEFAULT_TIERS['fake_at_or_above']:.2f} are used.")
    return {"real_below": lo, "fake_at_or_above": hi}, None


def _quality_problems(report: "GuardrailReport") -> list[str]:
    q = report.quality
    problems = []
    if q.low_jpeg_quality:
        problems.append(f"heavily compressed JPEG (estimated quality {q.jpeg_quality:.0f}, below {LOW_JPEG_QUALITY})")
    if q.blurry:
        problems.append(f"no sharp detail anywhere (sharpness {q.blur:.0f}, below {BLUR_THRESHOLD:.0f}: "
                        "blur, defocus, fog or a featureless scene)")
    if q.heavily_upscaled:
        if q.model_input:
            problems.append(f"tiny image ({q.width}×{q.height}) upscaled to the model input "
                            f"{q.model_input[1]}×{q.model_input[0]}")
        else:
            problems.append(f"tiny image ({q.width}×{q.height})")
    elif q.too_small:
        problems.append(f"tiny image ({q.width}×{q.height}, shorter side below {MIN_IMAGE_SIDE} px: "
                        "a thumbnail keeps too few original pixels for the local traces the model reads)")
    return problems


def ood_reason(ood: dict[str, Any]) -> str:
    """The sentence shown when the out-of-distribution guard trips."""
    return (f"Unlike the images this model was calibrated on (distance {ood['distance']:.2f} above "
            f"{ood['threshold']:.2f}): on unfamiliar images its clear verdicts are often wrong.")


#: Rule 7: how far beyond 0.5 each part's probability must lean for a fused clear verdict.
AGREEMENT_MARGIN = 0.10


def parts_disagree(tier: str, p_ladeda: float | None, p_clip: float | None,
                   margin: float = AGREEMENT_MARGIN) -> bool:
    """Rule 7: a clear tier that one of the two parts contradicts or does not clearly share (its
    probability not at least ``margin`` beyond 0.5 on the verdict's side)."""
    if tier not in ("real", "fake") or p_ladeda is None or p_clip is None:
        return False
    if tier == "fake":
        return min(p_ladeda, p_clip) < 0.5 + margin
    return max(p_ladeda, p_clip) >= 0.5 - margin


def disagreement_reason(tier: str, p_ladeda: float, p_clip: float) -> str:
    return (f"LaDeDa (P(fake) {p_ladeda:.0%}) and the CLIP second opinion (P(fake) {p_clip:.0%}) do not both "
            f"lean clearly (by {AGREEMENT_MARGIN * 100:g} points or more) towards \"{TIER_LABELS[tier]}\", "
            "so the fused verdict is not trusted: on unfamiliar sources one of the two is often confidently wrong. Sent to review.")


def decide(probability: float, tiers: dict[str, Any] | None, report: "GuardrailReport | None" = None,
           ood: dict[str, Any] | None = None, components: dict[str, Any] | None = None) -> Decision:
    """Apply the rules above; reasons are sentences an analyst can act on.

    ``ood`` is the out-of-distribution guard's finding (``distance``, ``threshold``,
    ``tripped``): when it trips there is no clear verdict, only review.
    ``components`` is the served value's per-part view (``core.learning.parts``): when
    it says the value was fused, rule 7 applies.
    """
    decision = _decide(probability, tiers, report)
    if ood and ood.get("tripped"):
        moved = decision.tier != "review"
        decision.reasons.append(ood_reason(ood) + (" Sent to review." if moved else ""))
        decision.tier = "review"
    if components and components.get("used") == "fused" and components.get("clip"):
        pl, pc = float(components["ladeda"]["probability"]), float(components["clip"]["probability"])
        if parts_disagree(decision.tier, pl, pc):
            decision.reasons.append(disagreement_reason(decision.tier, pl, pc))
            decision.tier = "review"
    if report is not None:
        apply_provenance(decision, report)
    return decision


def apply_provenance(decision: Decision, report: "GuardrailReport") -> None:
    """Rule 8: what the file's Content Credentials, as verified, do to the tier (reason first)."""
    prov = report.provenance
    if not prov.present:
        return
    signer = prov.signer or "an unnamed signer"
    issued = f", issued by {prov.issuer}" if prov.issuer else ""
    if prov.decision == "ai_generated":
        decision.reasons.insert(0, (
            f"Signed by {signer} as generated by an AI model; verified: valid signature, image unchanged since "
            f"signing, signer on your trust list{issued} (declared source: {', '.join(prov.source_types)}). Clearly "
            "fake by provenance; the detector's scores and reasons below are kept for reference and do not decide it."))
        decision.tier, decision.decided_by = "fake", "provenance"
    elif prov.decision == "ai_edited":
        edits = "; ".join(prov.ai_edits) or "an AI-assisted edit"
        decision.reasons.insert(0, (
            f"Partly generated, per its signed credentials (signed by {signer}{issued}; verified): {edits}. "
            "Sent to review: an analyst judges what the AI changed."))
        decision.tier, decision.decided_by = "review", "provenance"
    elif prov.decision == "unverified":
        claim = _claimed(prov)
        decision.reasons.insert(0, (
            f"Content Credentials present but not verified: {'; '.join(prov.problems) or 'verification failed'}."
            + (f" They claim {claim}, signed by {signer}." if claim else "")
            + " Credentials that do not verify prove nothing either way, and never make 'clearly real'; "
              "sent to review."))
        decision.tier, decision.decided_by = "review", "provenance"
    else:  # verified, no AI claim (a capture, a human edit)
        declared = ", ".join(prov.source_types) or "no AI generation"
        if decision.tier == "fake":
            decision.reasons.insert(0, (
                f"Verified Content Credentials (signed by {signer}{issued}) declare {declared}, which contradicts "
                "'clearly fake'; sent to review."))
            decision.tier, decision.decided_by = "review", "provenance"
        else:
            decision.reasons.append(
                f"Verified Content Credentials (signed by {signer}{issued}) declare {declared}: no AI generation is "
                "claimed. Evidence only; the detector's verdict stands.")


def _claimed(prov: Any) -> str:
    """The AI claim an unverified manifest makes, in words (empty when it makes none)."""
    if prov.claim == "ai_generated":
        return "the image was generated by an AI model (" + ", ".join(prov.source_types) + ")"
    if prov.claim == "ai_edited":
        return "it was partly generated (" + "; ".join(prov.ai_edits) + ")"
    return ""


def decide_served(served: Any, report: "GuardrailReport | None" = None) -> Decision:
    """The decision for a served value (``core.learning.parts.ServedValue``): its probability, tiers,
    OOD finding and components, plus its note. The one call every scoring path makes."""
    decision = decide(served.probability, served.tiers, report, ood=served.ood, components=served.components)
    if served.note:
        decision.reasons.append(served.note)
    return decision


def _decide(probability: float, tiers: dict[str, Any] | None, report: "GuardrailReport | None" = None) -> Decision:
    thresholds, tier_note = _valid_tiers(tiers)
    lo, hi = thresholds["real_below"], thresholds["fake_at_or_above"]
    base = base_tier(probability, thresholds)
    tier = base
    reasons = [{
        "real": f"Fake probability {probability:.2f} is below the clearly-real threshold {lo:.2f}.",
        "fake": f"Fake probability {probability:.2f} is at or above the clearly-fake threshold {hi:.2f}.",
        "review": f"Fake probability {probability:.2f} lies in the review band [{lo:.2f}, {hi:.2f}).",
    }[base]]
    if tier_note:
        reasons.append(tier_note)
    if report is None:
        return Decision(tier=tier, reasons=reasons, base_tier=base, thresholds=thresholds)

    # Rule 2: low quality.
    problems = _quality_problems(report)
    if problems and tier != "review":
        reasons.append(f"Low quality: {'; '.join(problems)}. The fine detail the model relies on is gone, "
                       f"so its '{TIER_LABELS[tier]}' call is unreliable; sent to review.")
        tier = "review"
    elif problems:
        reasons.append(f"Low quality: {'; '.join(problems)}. The score is less reliable than usual.")

    # Rule 3: one face much more fake than the whole image.
    scored = [(i, f) for i, f in enumerate(report.faces, 1) if f.score is not None]
    if scored and base != "fake":
        big = [(i, f) for i, f in scored if f.side >= FACE_MIN_SIDE]
        if big:
            i, worst = max(big, key=lambda t: t[1].score)
            if worst.score >= hi:
                moved = tier != "review"
                reasons.append(f"Face {i} of {len(report.faces)} scores {worst.score:.2f} on its own (at or above "
                               f"{hi:.2f}) while the whole image scores {probability:.2f}: one generated face can "
                               "hide in the image mean" + ("; sent to review." if moved else "."))
                tier = "review"
    if not report.faces:
        reasons.append("No face found: the verdict is about the whole image (LaDeDa is not a face model).")

    # Rule 4: generator metadata is evidence.
    meta = report.metadata
    if meta.generator_hints:
        listed = "; ".join(meta.generator_hints[:3])
        if tier == "real":
            reasons.append(f"Metadata names a generator ({listed}). Metadata alone is not proof, but it "
                           "contradicts 'clearly real'; sent to review.")
            tier = "review"
        else:
            reasons.append(f"Metadata evidence of a generator: {listed} (metadata alone is not proof).")

    # Rule 5: notes.
    if meta.editor_hints:
        reasons.append(f"Metadata shows editing software ({'; '.join(meta.editor_hints[:2])}): the image was "
                       "processed after capture, which is not evidence of generation.")
    if meta.has_camera:
        reasons.append("EXIF names a camera (evidence only: EXIF is easily copied or forged).")
    if report.quality.likely_screenshot:
        reasons.append("Looks like a screenshot (" + "; ".join(report.quality.screenshot_hints) + "): the model "
                       "scores the screen capture, not the original image.")
    return Decision(tier=tier, reasons=reasons, base_tier=base, thresholds=thresholds)

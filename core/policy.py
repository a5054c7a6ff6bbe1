"""The tier policy: calibrated probability + tier thresholds + guardrails → tier and reasons.

All of the policy's constants live here. Rules, in order:

1. Base tier from the checkpoint's tiers on the calibrated probability p:
   p < real_below → ``real``; p ≥ fake_at_or_above → ``fake``; else ``review``.
   A model without calibrated tiers uses ``DEFAULT_TIERS`` and says so.
2. Low quality (blurry, JPEG quality < 40, or smaller than half the model input)
   is never ``fake`` *and* never ``real``: compression, blur and upscaling erase
   the local traces the model reads, so a "fake" call is likely an artefact
   of the damage and a "real" call is exactly how a degraded fake slips
   through. Both go to ``review`` with the reason.
3. A face whose own crop scores at or above the fake threshold while the whole
   image is not ``fake`` sends the image to ``review`` (one generated face in a
   group photo can hide in the whole-image mean).
4. Generator metadata is evidence: it moves ``real`` to ``review`` and is
   listed as a reason otherwise; it never makes ``fake`` on its own.
5. No face found is noted, not blocked (LaDeDa is not a face model).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .guardrails.quality import BLUR_THRESHOLD

if TYPE_CHECKING:  # pragma: no cover
    from .guardrails import GuardrailReport

#: Used when a checkpoint carries no calibrated tiers.
DEFAULT_TIERS = {"real_below": 0.2, "fake_at_or_above": 0.8}
TIER_LABELS = {"real": "clearly real", "review": "needs review", "fake": "clearly fake"}


@dataclass
class Decision:
    tier: str
    reasons: list[str] = field(default_factory=list)
    base_tier: str = "review"
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def changed_by_guardrails(self) -> bool:
        return self.tier != self.base_tier

    def to_json(self) -> dict[str, Any]:
        return {"tier": self.tier, "base_tier": self.base_tier, "reasons": self.reasons,
                "thresholds": self.thresholds, "changed_by_guardrails": self.changed_by_guardrails}


def base_tier(p: float, tiers: dict[str, Any]) -> str:
    if p < float(tiers["real_below"]):
        return "real"
    if p >= float(tiers["fake_at_or_above"]):
        return "fake"
    return "review"


def decide(probability: float, tiers: dict[str, Any] | None, report: "GuardrailReport | None" = None) -> Decision:
    """Apply the rules above; reasons are sentences an analyst can act on."""
    reasons: list[str] = []
    if not tiers or "real_below" not in tiers or "fake_at_or_above" not in tiers:
        tiers = DEFAULT_TIERS
        reasons.append(f"This model has no calibrated tiers; default thresholds {tiers['real_below']:.2f} / "
                       f"{tiers['fake_at_or_above']:.2f} are used.")
    lo, hi = float(tiers["real_below"]), float(tiers["fake_at_or_above"])
    base = base_tier(probability, tiers)
    tier = base
    reasons.insert(0, {
        "real": f"Fake probability {probability:.2f} is below the clearly-real threshold {lo:.2f}.",
        "fake": f"Fake probability {probability:.2f} is at or above the clearly-fake threshold {hi:.2f}.",
        "review": f"Fake probability {probability:.2f} lies in the review band [{lo:.2f}, {hi:.2f}).",
    }[base])
    if report is not None:
        q = report.quality
        problems = []
        if q.low_jpeg_quality:
            problems.append(f"heavily compressed JPEG (estimated quality {q.jpeg_quality:.0f})")
        if q.blurry:
            problems.append(f"blurry (sharpness {q.blur:.0f} below {BLUR_THRESHOLD:.0f})")
        if q.heavily_upscaled:
            problems.append(f"tiny image ({q.width}x{q.height}) upscaled to the model input "
                            f"{q.model_input[1]}x{q.model_input[0]}" if q.model_input else "tiny image")
        if problems and tier != "review":
            reasons.append(f"Low quality: {', '.join(problems)}. The fine detail the model relies on is gone, "
                           f"so its '{TIER_LABELS[tier]}' call is unreliable; sent to review.")
            tier = "review"
        elif problems:
            reasons.append(f"Low quality: {', '.join(problems)}; the score is less reliable than usual.")
        scored = [f for f in report.faces if f.score is not None]
        if scored and tier != "fake":
            worst_i, worst = max(enumerate(scored), key=lambda t: t[1].score)
            if worst.score >= hi:
                reasons.append(f"Face {worst_i + 1} of {len(scored)} scores {worst.score:.2f} on its own (at or above "
                               f"{hi:.2f}) while the whole image does not: one manipulated face can hide in the "
                               "image mean; sent to review.")
                tier = "review"
        if not report.faces:
            reasons.append("No face found: the verdict is about the whole image (LaDeDa is not a face model).")
        gen = report.metadata.generator_hints
        if gen:
            if tier == "real":
                reasons.append(f"Metadata names a generator ({gen[0]}); metadata alone is not proof, "
                               "but it contradicts 'clearly real'; sent to review.")
                tier = "review"
            else:
                reasons.append(f"Metadata evidence: {gen[0]}.")
        if report.metadata.has_camera and tier != "real":
            reasons.append("EXIF names a camera (evidence only: EXIF is easily copied).")
    return Decision(tier=tier, reasons=reasons, base_tier=base, thresholds={"real_below": lo, "fake_at_or_above": hi})

"""One image, all the evidence: score → guardrails → policy (→ store).

The CLI and the dashboard both call :func:`analyse`, so an analyst and a
script always see the same tier and reasons for the same bytes and model.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.scoring.detector import Detector, ScoreResult
from core.imageio import DecodedImage, ImageSource
from core.model.preprocess import ModelInput
from core.scoring.guardrails import GuardrailReport, run_guardrails
from core.scoring.policy import Decision, decide

if TYPE_CHECKING:
    from core.review.store import ReviewStore


@dataclass
class Analysis:
    decoded: DecodedImage
    score: ScoreResult
    guardrails: GuardrailReport | None
    decision: Decision
    timings_ms: dict[str, float]

    @property
    def tier(self) -> str:
        return self.decision.tier

    @property
    def reasons(self) -> list[str]:
        return self.decision.reasons

    def to_json(self) -> dict[str, Any]:
        out = self.score.to_json()
        out["tier"] = self.decision.tier
        out["reasons"] = list(self.decision.reasons)
        out["decision"] = self.decision.to_json()
        out["guardrails"] = self.guardrails.to_json() if self.guardrails is not None else None
        out["timings_ms"] = {**out["timings_ms"], **{k: round(v, 2) for k, v in self.timings_ms.items()}}
        return out


def analyse(detector: Detector, source: ImageSource | DecodedImage, *, name: str | None = None,
            guardrails: bool = True, top_k: int = 5, prepared: ModelInput | None = None) -> Analysis:
    """Score an image, run the guardrails (faces scored by the same detector) and decide its tier.

    ``prepared`` (``detector.prepare(decoded)``) lets a caller that keeps the model input (GradCAM)
    preprocess once."""
    decoded = source if isinstance(source, DecodedImage) else detector.decode(source)
    if name is None and not isinstance(source, (bytes, bytearray, memoryview, DecodedImage)):
        name = str(source)
    score = detector.score(decoded, name=name or "upload", top_k=top_k, prepared=prepared)
    t0 = time.perf_counter()
    report = run_guardrails(decoded, detector, model_input_size=tuple(score.image["model_input"])) if guardrails else None
    t1 = time.perf_counter()
    decision = decide(score.probability, detector.checkpoint.tiers, report)
    t2 = time.perf_counter()
    return Analysis(decoded=decoded, score=score, guardrails=report, decision=decision,
                    timings_ms={"guardrails": (t1 - t0) * 1e3, "policy": (t2 - t1) * 1e3,
                                "analysis_total": score.timings_ms["total"] + (t2 - t0) * 1e3})


def record_analysis(store: "ReviewStore", analysis: Analysis, *, name: str, uploader: str | None,
                    auto_queue: bool = True) -> int:
    """Store the image bytes (deduplicated by hash) and append this scoring; review-tier items get queued."""
    sha = store.add_item(analysis.decoded.raw, name=name, uploader=uploader)
    s = analysis.score
    return store.record_scoring(
        sha,
        model_sha256=s.model["sha256"],
        model_label=s.model["label"],
        preprocess_fingerprint=s.model["preprocess_fingerprint"],
        calibration_version=s.model["calibration_version"],
        logit=s.logit,
        probability=s.probability,
        tier=analysis.decision.tier,
        reasons=analysis.decision.reasons,
        guardrails=analysis.guardrails.to_json() if analysis.guardrails is not None else {},
        timings={**s.timings_ms, **analysis.timings_ms},
        auto_queue=auto_queue,
        precision=s.model.get("precision"),
    )

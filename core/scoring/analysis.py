"""One image, all the evidence: score → guardrails → policy (→ store).

The CLI and the dashboard both call :func:`analyse`, so an analyst and a
script always see the same tier and reasons for the same bytes and model.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any


from core.scoring.detector import Detector, ScoreResult
from core.imageio import DecodedImage, ImageSource
from core.model.preprocess import ModelInput
from core.scoring.guardrails import GuardrailReport, run_guardrails
from core.scoring.policy import Decision, decide_served

if TYPE_CHECKING:
    from core.encoders.clip import ClipFeatures
    from core.learning.parts import LearnedParts, ServedValue
    from core.review.store import ReviewStore

#: Sentinel: "use the installed encoder" (pass ``encoder=None`` to score by LaDeDa alone).
INSTALLED = object()
_PARTS: dict[str, "LearnedParts"] = {}
_PARTS_LOCK = threading.Lock()


def learned_parts(checkpoint: Any) -> "LearnedParts":
    """The checkpoint's learned parts, parsed once per file."""
    from core.learning.parts import LearnedParts

    key = f"{checkpoint.sha256}:{id(checkpoint.learning)}"
    with _PARTS_LOCK:
        if key not in _PARTS:
            _PARTS[key] = LearnedParts.from_checkpoint(checkpoint)
        return _PARTS[key]


@dataclass
class Analysis:
    decoded: DecodedImage
    score: ScoreResult
    guardrails: GuardrailReport | None
    decision: Decision
    timings_ms: dict[str, float]
    #: The served value (fused when CLIP is available) and each part's view; None only for old callers.
    served: "ServedValue | None" = None
    clip: "ClipFeatures | None" = None
    #: Artifact keys of the features: {"ladeda": backbone key, "clip": encoder key or None}.
    feature_keys: dict[str, str | None] | None = None

    @property
    def tier(self) -> str:
        return self.decision.tier

    @property
    def reasons(self) -> list[str]:
        return self.decision.reasons

    @property
    def logit(self) -> float:
        return self.served.logit if self.served is not None else self.score.logit

    @property
    def probability(self) -> float:
        return self.served.probability if self.served is not None else self.score.probability

    def to_json(self) -> dict[str, Any]:
        out = self.score.to_json()
        if self.served is not None:
            out["logit"] = round(self.served.logit, 6)
            out["probability"] = round(self.served.probability, 6)
            out["calibrated"] = self.served.calibrated
            out["calibration_version"] = self.served.calibration_version
            out["components"] = self.served.components
            out["ood"] = self.served.ood
        out["tier"] = self.decision.tier
        out["reasons"] = list(self.decision.reasons)
        out["decision"] = self.decision.to_json()
        out["guardrails"] = self.guardrails.to_json() if self.guardrails is not None else None
        out["provenance"] = out["guardrails"]["provenance"] if out["guardrails"] is not None else None
        out["timings_ms"] = {**out["timings_ms"], **{k: round(v, 2) for k, v in self.timings_ms.items()}}
        return out


def analyse(detector: Detector, source: ImageSource | DecodedImage, *, name: str | None = None,
            guardrails: bool = True, top_k: int = 5, encoder: Any = INSTALLED,
            prepared: ModelInput | None = None) -> Analysis:
    """Score an image (LaDeDa, and CLIP when installed), fuse, check OOD, run the guardrails, decide the tier.

    ``prepared`` (``detector.prepare(decoded)``) lets a caller that keeps the model input (GradCAM)
    preprocess once."""
    from core.encoders.clip import encoder_status, load_encoder
    from core.learning.features import ladeda_key
    from core.learning.parts import served_value

    decoded = source if isinstance(source, DecodedImage) else detector.decode(source)
    if name is None and not isinstance(source, (bytes, bytearray, memoryview, DecodedImage)):
        name = str(source)
    score = detector.score(decoded, name=name or "upload", top_k=top_k, prepared=prepared)
    t_clip = time.perf_counter()
    if encoder is INSTALLED:
        encoder, clip_note = load_encoder(), encoder_status()
    else:
        clip_note = None if encoder is not None else "CLIP second opinion switched off: scored by LaDeDa alone."
    clip = encoder.encode(decoded) if encoder is not None else None
    parts = learned_parts(detector.checkpoint)
    served = served_value(detector.checkpoint, parts, ladeda_logit=score.logit, ladeda_probability=score.probability,
                          ladeda_calibrated=score.calibrated, pooled=score.pooled_features,
                          clip=clip, clip_note=clip_note)
    t0 = time.perf_counter()
    report = run_guardrails(decoded, detector, model_input_size=tuple(score.image["model_input"])) if guardrails else None
    t1 = time.perf_counter()
    decision = decide_served(served, report)
    t2 = time.perf_counter()
    return Analysis(decoded=decoded, score=score, guardrails=report, decision=decision,
                    timings_ms={"clip": (t0 - t_clip) * 1e3, "guardrails": (t1 - t0) * 1e3,
                                "policy": (t2 - t1) * 1e3,
                                "analysis_total": score.timings_ms["total"] + (t2 - t_clip) * 1e3},
                    served=served, clip=clip,
                    feature_keys={"ladeda": ladeda_key(detector.checkpoint),
                                  "clip": encoder.key if encoder is not None else None})


def record_analysis(store: "ReviewStore", analysis: Analysis, *, name: str, uploader: str | None,
                    auto_queue: bool = True) -> int:
    """Store the image bytes (deduplicated by hash) and append this scoring; review-tier items get queued."""
    sha = store.add_item(analysis.decoded.raw, name=name, uploader=uploader, sha256=analysis.decoded.sha256)
    s = analysis.score
    scoring_id = store.record_scoring(
        sha,
        model_sha256=s.model["sha256"],
        model_label=s.model["label"],
        preprocess_fingerprint=s.model["preprocess_fingerprint"],
        calibration_version=(analysis.served.calibration_version if analysis.served is not None
                             else s.model["calibration_version"]),
        logit=analysis.logit,
        probability=analysis.probability,
        tier=analysis.decision.tier,
        reasons=analysis.decision.reasons,
        guardrails=analysis.guardrails.to_json() if analysis.guardrails is not None else {},
        timings={**s.timings_ms, **analysis.timings_ms},
        auto_queue=auto_queue,
        precision=s.model.get("precision"),
    )
    store_features(store, analysis)
    return scoring_id


def store_features(store: "ReviewStore", analysis: Analysis) -> None:
    """Keep what adapt and the neighbours need (pooled LaDeDa features, CLIP view, perceptual hash)."""
    from core.learning.features import put_clip, put_ladeda

    sha = analysis.score.sha256
    keys = analysis.feature_keys or {}
    if analysis.score.pooled_features is not None and keys.get("ladeda"):
        put_ladeda(store.artifacts, sha, keys["ladeda"], analysis.score.pooled_features)
    if analysis.clip is not None and keys.get("clip"):
        put_clip(store.artifacts, sha, keys["clip"], analysis.clip)
    from core.learning.neighbours import put_hashes

    put_hashes(store.artifacts, sha, analysis.decoded.image)

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

    def verdict(self) -> dict[str, Any]:
        """The served verdict, as every door reports and stores it: the logit and probability the tier and
        reasons were decided on (fused when CLIP fused), with each part's view.

        ``score --json``, batch rows, the stored scoring and the evidence all read this one dict, so no
        door can write one part's value where the served one belongs. Floats are unrounded here.
        """
        served = self.served
        return {
            "logit": float(self.logit),
            "probability": float(self.probability),
            "calibrated": bool(served.calibrated if served is not None else self.score.calibrated),
            "calibration_version": (served.calibration_version if served is not None
                                    else self.score.model.get("calibration_version")),
            "tier": self.decision.tier,
            "reasons": [str(r) for r in self.decision.reasons],
            "components": served.components if served is not None else None,
            "ood": served.ood if served is not None else None,
        }

    def to_json(self) -> dict[str, Any]:
        out = self.score.to_json()
        v = self.verdict()
        out.update(logit=round(v["logit"], 6), probability=round(v["probability"], 6), calibrated=v["calibrated"],
                   calibration_version=v["calibration_version"], tier=v["tier"], reasons=v["reasons"])
        if self.served is not None:
            out["components"], out["ood"] = v["components"], v["ood"]
        out["decision"] = self.decision.to_json()
        out["guardrails"] = self.guardrails.to_json() if self.guardrails is not None else None
        out["provenance"] = out["guardrails"]["provenance"] if out["guardrails"] is not None else None
        out["timings_ms"] = {**out["timings_ms"], **{k: round(v, 2) for k, v in self.timings_ms.items()}}
        return out


#: LaDeDa's logit while its pass is still running (the verdict-first card): 0, "no evidence either way",
#: so the provisional fused logit is CLIP's term plus the fusion's bias. Chosen over LaDeDa's mean logit on
#: the base data because that mean is the base data's class mix, not a property of the image.
LADEDA_PRIOR_LOGIT = 0.0


@dataclass
class FirstLook:
    """The verdict before LaDeDa's pass: one CLIP pass fused with LaDeDa's term at its prior.

    Provisional by construction: the OOD guard (which reads LaDeDa's pooled features), LaDeDa's own
    term and the guardrails come in the second phase, and may move the tier."""

    decoded: DecodedImage
    clip: "ClipFeatures"
    served: "ServedValue"
    decision: Decision
    timings_ms: dict[str, float]
    encoder_key: str


def first_look(detector: Detector, decoded: DecodedImage, *, encoder: Any = INSTALLED) -> FirstLook | None:
    """The fused verdict from CLIP alone, LaDeDa's logit at :data:`LADEDA_PRIOR_LOGIT`; None when CLIP
    cannot decide it (no encoder, or a model without a fitted CLIP head and fusion), in which case the
    verdict's critical path stays LaDeDa's."""
    from core.encoders.clip import load_encoder
    from core.learning.parts import served_value

    if encoder is INSTALLED:
        encoder = load_encoder()
    parts = learned_parts(detector.checkpoint)
    if encoder is None or not parts.fuses:
        return None
    t0 = time.perf_counter()
    clip = encoder.encode(decoded)
    t1 = time.perf_counter()
    served = served_value(detector.checkpoint, parts, ladeda_logit=LADEDA_PRIOR_LOGIT,
                          ladeda_probability=_sigmoid(LADEDA_PRIOR_LOGIT), ladeda_calibrated=False, pooled=None,
                          clip=clip, clip_note=None)
    served.components["ladeda"]["pending"] = True  # the card says LaDeDa's term is its prior, not its reading
    decision = decide_served(served, None)
    t2 = time.perf_counter()
    return FirstLook(decoded=decoded, clip=clip, served=served, decision=decision, encoder_key=encoder.key,
                     timings_ms={"clip": (t1 - t0) * 1e3, "first_look": (t2 - t0) * 1e3})


def _sigmoid(z: float) -> float:
    import math

    return 1.0 / (1.0 + math.exp(-z))


def analyse(detector: Detector, source: ImageSource | DecodedImage, *, name: str | None = None,
            guardrails: bool = True, top_k: int = 5, encoder: Any = INSTALLED,
            prepared: ModelInput | None = None, clip: "ClipFeatures | None" = None) -> Analysis:
    """Score an image (LaDeDa, and CLIP when installed), fuse, check OOD, run the guardrails, decide the tier.

    ``prepared`` (``detector.prepare(decoded)``) lets a caller that keeps the model input (GradCAM)
    preprocess once; ``clip`` (a :class:`FirstLook`'s features) lets the second phase reuse the CLIP
    pass the first one made instead of running the encoder again."""
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
    if clip is None:
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
    v = analysis.verdict()
    scoring_id = store.record_scoring(
        sha,
        model_sha256=s.model["sha256"],
        model_label=s.model["label"],
        preprocess_fingerprint=s.model["preprocess_fingerprint"],
        calibration_version=v["calibration_version"],
        logit=v["logit"],
        probability=v["probability"],
        tier=v["tier"],
        reasons=v["reasons"],
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

"""Stability probe: does this image's verdict survive benign edits?

Why: detectors that read pixel-level traces are fragile under recompression
and resizing (the seeds show it on whole test sets); an analyst needs to know
whether *this* verdict is one of the fragile ones. The probe re-scores the
image after six edits a platform or a user applies without thinking — JPEG at
quality 90, 75 and 50, downscaling to ×0.75 and ×0.5, and a 10 % centre crop
(the central 90 % of each side is kept) — and reports each variant's
calibrated probability and tier.

A *flip* is a variant whose tier differs from the original's. Tiers here are
the thresholds' tiers on the calibrated probability (``policy.decide``
without guardrails), for the original as for the variants: the guardrails
judge the upload itself and are not rerun on edits of it. A flip sends the
item to review with a reason (:func:`with_stability`, :func:`record_probe`).
The probe is evidence about the verdict and never makes a clear tier.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from PIL import Image

from core.imageio import DecodedImage, ImageSource, decode_image
from core.scoring.policy import Decision, decide

if TYPE_CHECKING:  # pragma: no cover
    from core.review.store import ReviewStore
    from core.scoring.detector import Detector

#: Artifact kind under which a probe is stored with the item's scoring (``store.artifacts``).
ARTIFACT_KIND = "probe"
#: Variants whose shorter side would fall below this many pixels are skipped (too few pixels to score).
MIN_VARIANT_SIDE = 16
#: Share of each side kept by the centre crop.
CROP_KEEP = 0.90


def _jpeg(quality: int) -> Callable[[Image.Image], tuple[bytes, str]]:
    def edit(image: Image.Image) -> tuple[bytes, str]:
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=quality)  # Pillow's default 4:2:0 subsampling, as most encoders
        return buf.getvalue(), f"re-encoded as JPEG at quality {quality}"

    return edit


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=1)  # lossless: only the geometric edit changes pixels
    return buf.getvalue()


def _scale(factor: float) -> Callable[[Image.Image], tuple[bytes, str]]:
    def edit(image: Image.Image) -> tuple[bytes, str]:
        w, h = max(1, round(image.width * factor)), max(1, round(image.height * factor))
        return _png(image.resize((w, h), Image.Resampling.LANCZOS)), f"downscaled ×{factor:g} to {w}×{h} (Lanczos)"

    return edit


def _centre_crop(image: Image.Image) -> tuple[bytes, str]:
    w, h = max(1, round(image.width * CROP_KEEP)), max(1, round(image.height * CROP_KEEP))
    x0, y0 = (image.width - w) // 2, (image.height - h) // 2
    return _png(image.crop((x0, y0, x0 + w, y0 + h))), f"centre crop keeping {w}×{h} ({CROP_KEEP:.0%} of each side)"


#: (name, edit, scale of the shorter side): the edits, in the order they are reported.
VARIANTS: tuple[tuple[str, Callable[[Image.Image], tuple[bytes, str]], float], ...] = (
    ("jpeg_q90", _jpeg(90), 1.0),
    ("jpeg_q75", _jpeg(75), 1.0),
    ("jpeg_q50", _jpeg(50), 1.0),
    ("downscale_0.75", _scale(0.75), 0.75),
    ("downscale_0.5", _scale(0.5), 0.5),
    ("center_crop_10pct", _centre_crop, CROP_KEEP),
)
VARIANT_NAMES = tuple(name for name, _, _ in VARIANTS)


@dataclass
class VariantScore:
    """One edited copy and what the model says about it (``probability``/``tier`` None when skipped)."""

    name: str
    probability: float | None
    tier: str | None
    logit: float | None = None
    edit: str = ""
    sha256: str | None = None  #: of the edited bytes, so anyone can reproduce the variant
    width: int | None = None
    height: int | None = None
    flipped: bool = False
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "probability": None if self.probability is None else round(self.probability, 6),
            "tier": self.tier,
            "logit": None if self.logit is None else round(self.logit, 6),
            "edit": self.edit, "sha256": self.sha256, "size": [self.width, self.height],
            "flipped": self.flipped, "skipped": self.skipped,
        }


@dataclass
class ProbeResult:
    """The original's score, every variant's, and which variants flipped the tier."""

    file: str
    sha256: str
    original: VariantScore
    variants: list[VariantScore]
    thresholds: dict[str, float]
    model: dict[str, Any]
    elapsed_ms: float = 0.0
    flips: list[str] = field(default_factory=list)

    @property
    def stable(self) -> bool:
        return not self.flips

    @property
    def max_shift(self) -> float:
        """Largest change of the calibrated probability over the scored variants."""
        shifts = [abs(v.probability - self.original.probability) for v in self.variants
                  if v.probability is not None and self.original.probability is not None]
        return max(shifts) if shifts else 0.0

    def flip_text(self) -> str:
        """'jpeg_q50: fake → review; downscale_0.5: fake → real' (empty when stable)."""
        by_name = {v.name: v for v in self.variants}
        return "; ".join(f"{n}: {self.original.tier} → {by_name[n].tier}" for n in self.flips)

    def summary(self) -> str:
        """One sentence for people."""
        scored = [v for v in self.variants if v.probability is not None]
        if not self.flips:
            return (f"Stable: the tier stays '{self.original.tier}' under all {len(scored)} benign edits "
                    f"(largest probability change {self.max_shift:.2f}).")
        return (f"Unstable: the tier flips under {len(self.flips)} of {len(scored)} benign edits "
                f"({self.flip_text()}).")

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "variants": [v.to_json() for v in self.variants],
            "flips": list(self.flips),
            "sha256": self.sha256,
            "original": self.original.to_json(),
            "stable": self.stable,
            "max_shift": round(self.max_shift, 6),
            "summary": self.summary(),
            "thresholds": dict(self.thresholds),
            "model": {k: self.model.get(k) for k in ("label", "sha256", "preprocess_fingerprint",
                                                     "calibration_version")},
            "elapsed_ms": round(self.elapsed_ms, 1),
        }


def _score(detector: "Detector", decoded: DecodedImage, name: str) -> tuple[float, float, str, dict[str, float]]:
    result = detector.score(decoded, name=name, top_k=1)
    decision = decide(result.probability, detector.checkpoint.tiers)
    return result.logit, result.probability, decision.tier, decision.thresholds


def probe(detector: "Detector", source: ImageSource | DecodedImage, *, name: str | None = None) -> ProbeResult:
    """Score ``source`` and its six benign variants with ``detector``; flag tier flips."""
    t0 = time.perf_counter()
    decoded = source if isinstance(source, DecodedImage) else detector.decode(source)
    if name is None:
        name = "upload" if isinstance(source, (bytes, bytearray, memoryview, DecodedImage)) else str(source)
    logit, p, tier, thresholds = _score(detector, decoded, name)
    original = VariantScore(name="original", probability=p, tier=tier, logit=logit, edit="as uploaded",
                            sha256=decoded.sha256, width=decoded.width, height=decoded.height)
    variants: list[VariantScore] = []
    short = min(decoded.width, decoded.height)
    for vname, edit, scale in VARIANTS:
        if short * scale < MIN_VARIANT_SIDE:
            variants.append(VariantScore(name=vname, probability=None, tier=None, edit="",
                                         skipped=f"the image is too small for this edit (shorter side {short} px)"))
            continue
        data, what = edit(decoded.image)
        edited = decode_image(data, max_pixels=detector.max_pixels, exif_policy="ignore")
        v_logit, v_p, v_tier, _ = _score(detector, edited, f"{name} [{vname}]")
        variants.append(VariantScore(name=vname, probability=v_p, tier=v_tier, logit=v_logit, edit=what,
                                     sha256=hashlib.sha256(data).hexdigest(), width=edited.width,
                                     height=edited.height, flipped=v_tier != tier))
    return ProbeResult(file=name, sha256=decoded.sha256, original=original, variants=variants,
                       thresholds=thresholds, model=dict(detector.identity),
                       elapsed_ms=(time.perf_counter() - t0) * 1e3,
                       flips=[v.name for v in variants if v.flipped])


def stability_reason(result: ProbeResult | dict[str, Any]) -> str | None:
    """The sentence a flip adds to the verdict's reasons (None when the verdict is stable)."""
    data = result.to_json() if isinstance(result, ProbeResult) else result
    flips = list(data.get("flips") or [])
    if not flips:
        return None
    tiers = {v["name"]: v.get("tier") for v in data.get("variants", [])}
    start = (data.get("original") or {}).get("tier")
    detail = "; ".join(f"{n}: {start} → {tiers.get(n)}" for n in flips)
    return (f"Stability probe: the tier changes under benign edits ({detail}), so the verdict depends on how "
            "this copy was encoded or sized; sent to review.")


def with_stability(decision: Decision, result: ProbeResult | dict[str, Any]) -> Decision:
    """The decision after the probe: a flip moves any tier to ``review`` with the reason; else unchanged.

    Like every policy rule it only ever moves a tier to review, except one that the file's Content
    Credentials set (policy rule 8): a signed claim does not depend on how stable the pixels' score is.
    """
    reason = stability_reason(result)
    if reason is None:
        return decision
    if decision.decided_by == "provenance":
        kept = reason.replace("; sent to review.", "; the tier stays: the file's Content Credentials set it.")
        return dataclasses.replace(decision, reasons=[*decision.reasons, kept])
    return dataclasses.replace(decision, tier="review", reasons=[*decision.reasons, reason])


def record_probe(store: "ReviewStore", result: ProbeResult, *, model_key: str, by: str | None = None) -> dict[str, Any]:
    """Store the probe with the item's scoring and, on a flip, send the item to review.

    The probe is written as the ``probe`` artifact of (item, weights); its
    metadata names the scoring it accompanies (the latest by this model). A
    flip queues the item with the reason unless a reviewer already labelled
    it (their decision stands; the probe is shown beside it). Returns
    ``{"artifact", "scoring_id", "queued", "queue_state"}``.
    """
    item = store.item(result.sha256)  # refuses an item that is not stored
    model_sha = result.model.get("sha256")
    mine = [s for s in item.get("scorings") or [] if s.get("model_sha256") == model_sha]
    scoring_id = (mine or item.get("scorings") or [{}])[-1].get("id")
    payload = result.to_json()
    arrays = {"probabilities": np.array([np.nan if v.probability is None else v.probability
                                         for v in [result.original, *result.variants]], dtype=np.float64)}
    path = store.artifacts.put(result.sha256, model_key, ARTIFACT_KIND, arrays,
                               {**payload, "scoring_id": scoring_id, "probed_by": by})
    queued = False
    state = item.get("queue_state")
    reason = stability_reason(payload)
    if reason and item.get("current_label") is None and state not in ("queued", "leased"):
        row = store.enqueue(result.sha256, by=by, reason=f"stability probe: {result.flip_text()}")
        queued, state = True, row.get("state")
    return {"artifact": str(path), "scoring_id": scoring_id, "queued": queued, "queue_state": state}


def stored_probe(store: "ReviewStore", sha256: str, model_key: str, *,
                 model_sha256: str | None = None) -> dict[str, Any] | None:
    """The probe stored for this item and weights (its JSON), or None.

    With ``model_sha256`` a probe made by another file of the same weights (another
    calibration or thresholds, so other probabilities and tiers) counts as absent.
    """
    found = store.artifacts.get(sha256, model_key, ARTIFACT_KIND)
    if found is None:
        return None
    meta = dict(found[1])
    meta.pop("model_key", None)
    if model_sha256 is not None and (meta.get("model") or {}).get("sha256") != model_sha256:
        return None
    return meta

"""Guardrails around the model: faces (with per-face scores), quality, metadata, Content Credentials.

``run_guardrails`` gathers the findings that the policy (``core.scoring.policy``)
combines with the calibrated probability, and that analysts see beside it.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

from core.imageio import DecodedImage
from core.scoring.guardrails.faces import Face, faces_for
from core.scoring.guardrails.metadata import MetadataReport, read_metadata
from core.scoring.guardrails.provenance import ProvenanceReport, library_status, read_provenance
from core.scoring.guardrails.quality import QualityReport, assess_quality, estimate_jpeg_quality

if TYPE_CHECKING:  # pragma: no cover
    from core.scoring.detector import Detector

__all__ = ["Face", "GuardrailReport", "MetadataReport", "ProvenanceReport", "QualityReport", "estimate_jpeg_quality",
           "run_guardrails"]


@dataclass
class GuardrailReport:
    faces: list[Face]
    quality: QualityReport
    metadata: MetadataReport
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: The C2PA manifest as the official library verified it (absent: nothing to verify).
    provenance: ProvenanceReport = field(default_factory=ProvenanceReport)

    @property
    def max_face_score(self) -> float | None:
        scores = [f.score for f in self.faces if f.score is not None]
        return max(scores) if scores else None

    def to_json(self) -> dict[str, Any]:
        return {
            "faces": [f.to_json() for f in self.faces],
            "max_face_score": None if self.max_face_score is None else round(self.max_face_score, 6),
            "blur": round(self.quality.blur, 2),
            "jpeg_quality": self.quality.jpeg_quality,
            "quality": self.quality.to_json(),
            "metadata": self.metadata.to_json(),
            "provenance": self.provenance.to_json(),
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }


def run_guardrails(decoded: DecodedImage, detector: "Detector | None" = None, *,
                   model_input_size: tuple[int, int] | None = None) -> GuardrailReport:
    """Faces (scored by ``detector`` when given), quality and metadata for one decoded image.

    ``model_input_size`` (height, width) is what the model reads; by default the detector's spec answers
    it for this image. Without a detector there is no model input, so nothing is called upscaled.
    """
    t0 = time.perf_counter()
    if model_input_size is None and detector is not None:
        model_input_size = detector.spec.input_size(decoded.width, decoded.height)
    # Re-open the original bytes (headers only) for EXIF, text chunks and JPEG tables; closed right after.
    container = Image.open(io.BytesIO(decoded.raw)) if decoded.raw else decoded.image
    try:
        metadata = read_metadata(container, decoded.raw)
        t1 = time.perf_counter()
        quality = assess_quality(container, decoded.image, model_input_size, has_camera=metadata.has_camera)
    finally:
        if container is not decoded.image:
            container.close()
    t2 = time.perf_counter()
    provenance = read_provenance(decoded.raw, decoded.format, marker=metadata.c2pa)
    if library_status()[1] is None:  # the library read the file: its account replaces the byte markers'
        metadata.defer_c2pa_to_library()
    t3 = time.perf_counter()
    faces, face_timings = faces_for(decoded, detector)
    return GuardrailReport(faces=faces, quality=quality, metadata=metadata, provenance=provenance,
                           timings_ms={"metadata": (t1 - t0) * 1e3, "quality": (t2 - t1) * 1e3,
                                       "provenance": (t3 - t2) * 1e3, **face_timings})

"""What the evidence panels show, stored once per (item, model weights).

Why: Review, a re-upload of the same bytes and every page must show an
item's evidence without running a model again. One scoring leaves one
:class:`Evidence`: the patch-logit map (float16, compressed), the most-fake
patches, the score facts and poolings, the decision (tier, reasons,
thresholds), the guardrail report with face boxes and per-face scores, and
the timings. It is written through ``store.artifacts`` (kind ``evidence``)
under :func:`core.model.registry.weights_key`, so a new calibration of the
same weights still finds the map; ``model_sha256`` says which exact
checkpoint produced the verdict.

GradCAM at the default layer of LaDeDa is a function of the patch map
(``core.scoring.explain.gradcam_from_patch_map``), so it is rendered from the
stored map. For other models the deferred pass stores the computed CAM grid
(``gradcam_grid``) beside it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from core.model.models import PatchGeometry

if TYPE_CHECKING:  # pragma: no cover
    from core.review.store import ReviewStore
    from core.scoring.analysis import Analysis, FirstLook

KIND = "evidence"
#: Bumped when the stored layout changes; older records are treated as absent (re-scored on demand).
FORMAT = 1


@dataclass
class TopPatch:
    """One of the most-fake patches: grid position, logit and box in original-image pixels."""

    rank: int
    row: int
    col: int
    logit: float
    box: tuple[int, int, int, int]


@dataclass
class Evidence:
    """Everything the verdict card and the evidence panels need, without the model."""

    sha256: str
    model_key: str  #: weights + preprocessing (calibration ignored)
    model_sha256: str  #: the exact checkpoint that produced this verdict
    model_label: str
    calibration_version: str | None
    name: str
    logit: float
    probability: float
    calibrated: bool
    patch_logits: np.ndarray = field(repr=False)  #: H'×W' float32 (stored as float16)
    model_input_hw: tuple[int, int] = (0, 0)
    image_size: tuple[int, int] = (0, 0)  #: original (width, height)
    geometry: tuple[int, int, int] = (9, 8, 0)  #: patch (size, stride, offset)
    head_bias: float | None = None  #: the linear head's bias (for GradCAM from the map)
    gradcam_layer: str | None = None  #: the default GradCAM layer when it equals the patch grid
    poolings: dict[str, float] = field(default_factory=dict)
    top_patches: list[TopPatch] = field(default_factory=list)
    decision: dict[str, Any] = field(default_factory=dict)  #: tier, base_tier, reasons, thresholds, ...
    guardrails: dict[str, Any] | None = None  #: GuardrailReport.to_json(), faces with boxes and scores
    timings_ms: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  #: further facts (fusion components, OOD, ...)
    gradcam_grid: np.ndarray | None = field(default=None, repr=False)  #: stored CAM grid (non-LaDeDa models)
    gradcam_target: str | None = None

    # -- facts ---------------------------------------------------------------
    @property
    def tier(self) -> str:
        return str(self.decision.get("tier", "review"))

    @property
    def reasons(self) -> list[str]:
        return list(self.decision.get("reasons") or [])

    @property
    def complete(self) -> bool:
        """True once the guardrails (faces, quality, metadata) are in and the decision is final."""
        return self.guardrails is not None

    @property
    def patch_geometry(self) -> PatchGeometry:
        return PatchGeometry(*(int(v) for v in self.geometry))

    @property
    def faces(self) -> list[dict[str, Any]]:
        return list((self.guardrails or {}).get("faces") or [])

    # -- from a scoring ------------------------------------------------------
    @classmethod
    def from_analysis(cls, analysis: "Analysis", *, model_key: str, name: str, geometry: PatchGeometry,
                      head_bias: float | None = None, gradcam_layer: str | None = None,
                      timings_ms: dict[str, float] | None = None) -> "Evidence":
        s = analysis.score
        payload = analysis.to_json()
        v = analysis.verdict()  # the served values: the ones the tier and reasons were decided on
        extra = {k: payload[k] for k in ("components", "ood") if k in payload}
        return cls(
            sha256=s.sha256, model_key=model_key, model_sha256=str(s.model.get("sha256") or ""),
            model_label=str(s.model.get("label") or ""), calibration_version=v["calibration_version"],
            name=name, logit=v["logit"], probability=v["probability"],
            calibrated=v["calibrated"], patch_logits=np.asarray(s.patch_logits, dtype=np.float32),
            model_input_hw=tuple(int(v) for v in s.image.get("model_input") or s.patch_map_shape),
            image_size=(int(s.image["width"]), int(s.image["height"])),
            geometry=(int(geometry.size), int(geometry.stride), int(geometry.offset)),
            head_bias=head_bias, gradcam_layer=gradcam_layer,
            poolings={k: float(v) for k, v in s.poolings.items()},
            top_patches=[TopPatch(i, p.row, p.col, float(p.logit), tuple(int(v) for v in p.box))
                         for i, p in enumerate(s.top_patches, 1)],
            decision=analysis.decision.to_json(),
            guardrails=analysis.guardrails.to_json() if analysis.guardrails is not None else None,
            timings_ms={k: float(v) for k, v in (timings_ms or payload.get("timings_ms") or {}).items()},
            extra=extra,
        )

    @classmethod
    def first_look(cls, first: "FirstLook", *, model_key: str, model_sha256: str, model_label: str, name: str,
                   geometry: PatchGeometry, model_input_hw: tuple[int, int]) -> "Evidence":
        """The provisional card's evidence from CLIP's first look: no patch map yet (an empty grid), no
        guardrails, never stored (only a complete scoring is)."""
        served = first.served
        return cls(
            sha256=first.decoded.sha256, model_key=model_key, model_sha256=model_sha256, model_label=model_label,
            calibration_version=served.calibration_version, name=name, logit=float(served.logit),
            probability=float(served.probability), calibrated=bool(served.calibrated),
            patch_logits=np.zeros((0, 0), dtype=np.float32), model_input_hw=tuple(int(v) for v in model_input_hw),
            image_size=(int(first.decoded.width), int(first.decoded.height)),
            geometry=(int(geometry.size), int(geometry.stride), int(geometry.offset)),
            decision=first.decision.to_json(), guardrails=None, timings_ms=dict(first.timings_ms),
            extra={"components": served.components, "ood": None, "first_look": True},
        )

    @property
    def has_patch_map(self) -> bool:
        """False on the provisional card of a verdict-first upload, before LaDeDa's pass."""
        return self.patch_logits.size > 0

    # -- storage -------------------------------------------------------------
    def to_arrays_meta(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {"patch_logits": np.asarray(self.patch_logits, dtype=np.float16)}
        if self.gradcam_grid is not None:
            arrays["gradcam_grid"] = np.asarray(self.gradcam_grid, dtype=np.float16)
        meta = {
            "format": FORMAT, "model_sha256": self.model_sha256, "model_label": self.model_label,
            "calibration_version": self.calibration_version, "name": self.name, "logit": self.logit,
            "probability": self.probability, "calibrated": self.calibrated,
            "model_input_hw": list(self.model_input_hw), "image_size": list(self.image_size),
            "geometry": list(self.geometry), "head_bias": self.head_bias, "gradcam_layer": self.gradcam_layer,
            "poolings": self.poolings,
            "top_patches": [{"rank": p.rank, "row": p.row, "col": p.col, "logit": p.logit, "box": list(p.box)}
                            for p in self.top_patches],
            "decision": self.decision, "guardrails": self.guardrails, "timings_ms": self.timings_ms,
            "extra": self.extra, "gradcam_target": self.gradcam_target,
        }
        return arrays, meta

    @classmethod
    def from_arrays_meta(cls, sha256: str, model_key: str, arrays: dict[str, np.ndarray],
                         meta: dict[str, Any]) -> "Evidence | None":
        if int(meta.get("format", 0)) != FORMAT or "patch_logits" not in arrays:
            return None
        grid = arrays.get("gradcam_grid")
        return cls(
            sha256=sha256, model_key=model_key, model_sha256=str(meta.get("model_sha256") or ""),
            model_label=str(meta.get("model_label") or ""), calibration_version=meta.get("calibration_version"),
            name=str(meta.get("name") or "upload"), logit=float(meta["logit"]),
            probability=float(meta["probability"]), calibrated=bool(meta.get("calibrated")),
            patch_logits=np.asarray(arrays["patch_logits"], dtype=np.float32),
            model_input_hw=tuple(int(v) for v in meta.get("model_input_hw") or (0, 0)),
            image_size=tuple(int(v) for v in meta.get("image_size") or (0, 0)),
            geometry=tuple(int(v) for v in meta.get("geometry") or (9, 8, 0)),
            head_bias=meta.get("head_bias"), gradcam_layer=meta.get("gradcam_layer"),
            poolings={k: float(v) for k, v in (meta.get("poolings") or {}).items()},
            top_patches=[TopPatch(int(p["rank"]), int(p["row"]), int(p["col"]), float(p["logit"]),
                                  tuple(int(v) for v in p["box"])) for p in meta.get("top_patches") or []],
            decision=dict(meta.get("decision") or {}), guardrails=meta.get("guardrails"),
            timings_ms={k: float(v) for k, v in (meta.get("timings_ms") or {}).items()},
            extra=dict(meta.get("extra") or {}),
            gradcam_grid=None if grid is None else np.asarray(grid, dtype=np.float32),
            gradcam_target=meta.get("gradcam_target"),
        )


def save(store: "ReviewStore", ev: Evidence) -> None:
    """Write (or replace) the evidence of one item under its model key."""
    arrays, meta = ev.to_arrays_meta()
    store.artifacts.put(ev.sha256, ev.model_key, KIND, arrays, meta)


def load(store: "ReviewStore", sha256: str, model_key: str) -> Evidence | None:
    """The stored evidence, or None when this model's weights never scored the item."""
    got = store.artifacts.get(sha256, model_key, KIND)
    if got is None:
        return None
    arrays, meta = got
    return Evidence.from_arrays_meta(sha256, model_key, arrays, meta)

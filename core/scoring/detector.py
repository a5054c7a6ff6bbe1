"""The one object that is the model: network + preprocessing spec +
calibration + tiers + provenance, and the scoring API built on it.

``Detector.score`` follows an image through decode → preprocess → patch map →
image logit (mean of patches) → calibrated probability, and reports the
alternative poolings, the most-fake patches in original-image pixels, timings
and the checkpoint's identity.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.model.checkpoint import Checkpoint, load_checkpoint
from core.errors import ImageTooSmallError
from core.imageio import DEFAULT_MAX_PIXELS, DecodedImage, ImageSource, decode_image
from core.model.models import PatchGeometry
from core.paths import default_model_path
from core.model.preprocess import ModelInput, to_model_input
from core.model.precision import resolve_precision
from core.model.serving import ServingModel

#: Share of patches averaged by the top-k pooling.
TOPK_FRACTION = 0.05


def sigmoid(x: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


@dataclass
class PatchHit:
    """One of the most-fake patches."""

    row: int
    col: int
    logit: float
    box: tuple[int, int, int, int]  #: (x0, y0, x1, y1) in original-image pixels, x1/y1 exclusive


@dataclass
class ScoreResult:
    """Everything one scoring produced (serialisable with :meth:`to_json`)."""

    file: str
    sha256: str
    logit: float
    probability: float
    calibrated: bool
    patch_logits: np.ndarray = field(repr=False)  #: H'×W' float32
    poolings: dict[str, float]
    top_patches: list[PatchHit]
    timings_ms: dict[str, float]
    model: dict[str, Any]
    image: dict[str, Any]
    #: Mean over patches of the features before ``fc`` (C floats), for refitting heads without a new pass.
    pooled_features: np.ndarray | None = field(default=None, repr=False)

    @property
    def patch_map_shape(self) -> list[int]:
        return [int(self.patch_logits.shape[0]), int(self.patch_logits.shape[1])]

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "logit": round(self.logit, 6),
            "probability": round(self.probability, 6),
            "calibrated": self.calibrated,
            "patch_map_shape": self.patch_map_shape,
            "model_sha256": self.model["sha256"],
            "model": self.model["label"],
            "preprocess_fingerprint": self.model["preprocess_fingerprint"],
            "calibration_version": self.model["calibration_version"],
            "precision": self.model.get("precision", "fp32"),
            "poolings": {k: round(v, 6) for k, v in self.poolings.items()},
            "top_patches": [
                {"row": p.row, "col": p.col, "logit": round(p.logit, 6), "box": list(p.box)} for p in self.top_patches
            ],
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
            "image": self.image,
        }


def poolings(patch_logits: np.ndarray) -> dict[str, float]:
    """Image-level poolings of a patch map; ``mean`` is the model's own."""
    flat = np.asarray(patch_logits, dtype=np.float64).ravel()
    k = max(1, int(math.ceil(TOPK_FRACTION * flat.size)))
    top = np.partition(flat, flat.size - k)[flat.size - k:]
    return {"mean": float(flat.mean()), "max": float(flat.max()), "topk_mean": float(top.mean()), "topk_k": float(k)}


def top_patches(patch_logits: np.ndarray, geometry: PatchGeometry, input_hw: tuple[int, int],
                scale_xy: tuple[float, float], k: int = 5, max_overlap: float = 0.25) -> list[PatchHit]:
    """The k highest-logit patches, greedily skipping ones that overlap a kept one.

    Boxes are mapped from model-input pixels to original-image pixels.
    """
    h_in, w_in = input_hw
    order = np.argsort(patch_logits, axis=None)[::-1]
    kept: list[PatchHit] = []
    kept_boxes: list[tuple[int, int, int, int]] = []
    for flat in order:
        row, col = divmod(int(flat), patch_logits.shape[1])
        box = geometry.box(row, col, h_in, w_in)
        area = max(1, (box[2] - box[0]) * (box[3] - box[1]))
        if any(_overlap(box, other) > max_overlap * area for other in kept_boxes):
            continue
        kept_boxes.append(box)
        sx, sy = scale_xy
        orig = (int(math.floor(box[0] * sx)), int(math.floor(box[1] * sy)),
                int(math.ceil(box[2] * sx)), int(math.ceil(box[3] * sy)))
        kept.append(PatchHit(row=row, col=col, logit=float(patch_logits[row, col]), box=orig))
        if len(kept) >= k:
            break
    return kept


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0, w) * max(0, h)


class Detector:
    """A loaded checkpoint, ready to score images."""

    def __init__(self, checkpoint: Checkpoint, *, fast: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS,
                 precision: str | None = None) -> None:
        self.checkpoint = checkpoint
        self.spec = checkpoint.spec
        self.model = checkpoint.build_model()  # eager float32, also used for GradCAM
        self.max_pixels = max_pixels
        # precision: None = $LADEDA_PRECISION or this CPU's best enabled path (core.model.precision)
        self.precision = resolve_precision(precision) if fast else "fp32"
        int8_calibration = None
        if self.precision == "int8":
            int8_calibration, self.precision = self._int8_calibration(precision)
        # warm-up/trace shape: what a 256×256 image becomes under this checkpoint's spec
        self._serving = ServingModel(self.model, example_hw=self.spec.input_size(256, 256),
                                     precision=self.precision, int8_calibration=int8_calibration) if fast else None

    def _int8_calibration(self, requested: str | None) -> tuple[dict | None, str]:
        """(calibration, "int8") when this checkpoint has an int8 calibration for its network weights; else an
        automatic choice falls back to the next enabled path and an explicit request is refused."""
        from core.model.int8 import Int8Unavailable, calibration_file, load_calibration
        from core.model.precision import ENABLED, ENV_VAR, PrecisionError, choose_precision, cpu_flags

        path = calibration_file(self.checkpoint.path) if self.checkpoint.path else None
        try:
            return load_calibration(self.model, path), "int8"
        except Int8Unavailable as exc:
            asked = (requested if requested is not None else os.environ.get(ENV_VAR) or "auto").strip().lower()
            if asked == "int8":
                raise PrecisionError(f"Precision int8 is not available for this model: {exc}") from exc
            return None, choose_precision(cpu_flags(), "auto", enabled=[p for p in ENABLED if p != "int8"])

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, **kwargs: Any) -> "Detector":
        """Load ``path`` (or the default model) into a detector."""
        return cls(load_checkpoint(path or default_model_path()), **kwargs)

    # -- identity --------------------------------------------------------
    @property
    def geometry(self) -> PatchGeometry:
        return self.model.patch_geometry

    @property
    def identity(self) -> dict[str, Any]:
        c = self.checkpoint
        return {
            "label": c.label,
            "sha256": c.sha256,
            "path": str(c.path) if c.path else None,
            "preprocess_fingerprint": self.spec.fingerprint(),
            "preprocess_summary": self.spec.summary(),
            "calibration_version": c.calibration_version,
            "calibration_method": (c.calibration or {}).get("method"),
            "precision": self.precision,
        }

    # -- steps -----------------------------------------------------------
    def decode(self, source: ImageSource) -> DecodedImage:
        return decode_image(source, max_pixels=self.max_pixels, exif_policy=self.spec.exif_policy)

    def prepare(self, source: ImageSource | DecodedImage) -> ModelInput:
        """The model input for an image; refuses (typed) one thinner than a single patch after resizing."""
        model_input = to_model_input(source, self.spec, max_pixels=self.max_pixels)
        h, w = (int(v) for v in model_input.tensor.shape[-2:])
        self._refuse_if_too_small(model_input.decoded, h, w)
        return model_input

    def check_size(self, decoded: DecodedImage) -> None:
        """Refuse (typed, as :meth:`prepare` would) an image the spec makes thinner than one patch, without
        preprocessing it: a verdict-first card must not show a verdict LaDeDa's pass will then refuse."""
        h, w = self.spec.input_size(decoded.width, decoded.height)
        self._refuse_if_too_small(decoded, int(h), int(w))

    def _refuse_if_too_small(self, d: DecodedImage, h: int, w: int) -> None:
        need = int(self.geometry.size)
        if min(h, w) < need:
            raise ImageTooSmallError(
                f"This image is too thin or too small to analyse: {d.width}×{d.height} px becomes {w}×{h} px "
                f"for the model, which needs at least {need} px on each side (one {need}×{need} patch). "
                "Upload a larger or less elongated version, or crop the part you want judged.")

    def patch_map(self, tensor: torch.Tensor) -> np.ndarray:
        """N×3×H×W → N×H'×W' patch logits (float32 numpy)."""
        return self.forward(tensor)[0]

    def forward(self, tensor: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """N×3×H×W → (N×H'×W' patch logits, N×C pooled features), float32 numpy, one pass."""
        if self._serving is not None:
            out, pooled = self._serving.with_features(tensor)
        else:
            with torch.inference_mode():
                f = self.model.features(tensor)
                out = torch.einsum("nchw,oc->nohw", f, self.model.fc.weight) + self.model.fc.bias.view(1, -1, 1, 1)
                pooled = f.mean(dim=(2, 3))
        return out[:, 0].float().numpy(), pooled.float().numpy()

    def probability(self, logits: np.ndarray | float) -> tuple[np.ndarray, bool]:
        """Calibrated probability when the checkpoint has a calibration, else sigmoid."""
        logits = np.asarray(logits, dtype=np.float64)
        record = self.checkpoint.calibration
        if record:
            from core.calibration.calibrators import apply_record

            return np.asarray(apply_record(record, logits), dtype=np.float64), True
        return np.asarray(sigmoid(logits)), False

    # -- the whole call --------------------------------------------------
    def score(self, source: ImageSource | DecodedImage, *, name: str | None = None, top_k: int = 5,
              prepared: ModelInput | None = None) -> ScoreResult:
        """Score an image; ``prepared`` (this image's :meth:`prepare` output) skips preprocessing, so a
        caller that also needs the tensor (GradCAM) preprocesses once."""
        t0 = time.perf_counter()
        if prepared is not None:
            decoded = prepared.decoded
        else:
            decoded = source if isinstance(source, DecodedImage) else self.decode(source)
        t1 = time.perf_counter()
        model_input = prepared if prepared is not None else self.prepare(decoded)
        t2 = time.perf_counter()
        patch_maps, pooled_features = self.forward(model_input.tensor)
        patch = patch_maps[0]
        t3 = time.perf_counter()
        logit = float(np.asarray(patch, dtype=np.float64).mean())
        prob, calibrated = self.probability(logit)
        pooled = poolings(patch)
        hits = top_patches(patch, self.geometry, tuple(model_input.tensor.shape[-2:]), model_input.scale_xy, k=top_k)
        t4 = time.perf_counter()
        if name is None:
            name = str(source) if isinstance(source, (str, Path)) else "upload"
        return ScoreResult(
            file=name,
            sha256=decoded.sha256,
            logit=logit,
            probability=float(prob),
            calibrated=calibrated,
            patch_logits=patch,
            poolings=pooled,
            top_patches=hits,
            timings_ms={
                "decode": (t1 - t0) * 1e3,
                "preprocess": (t2 - t1) * 1e3,
                "forward": (t3 - t2) * 1e3,
                "postprocess": (t4 - t3) * 1e3,
                "total": (t4 - t0) * 1e3,
            },
            model=self.identity,
            image={
                "width": decoded.width,
                "height": decoded.height,
                "format": decoded.format,
                "mode": decoded.mode,
                "frames": decoded.n_frames,
                "exif_orientation": decoded.exif_orientation,
                "bytes": decoded.file_size,
                "model_input": list(model_input.tensor.shape[-2:]),
            },
            pooled_features=pooled_features[0],
        )

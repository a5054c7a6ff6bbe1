"""Face detection and per-face scoring.

Why: an image with several faces where only one is generated can have a
whole-image mean logit that looks real; scoring each face crop separately
exposes it. LaDeDa is not a face model, so faces are evidence, not a gate.

Detector choice: OpenCV's Haar cascades, because their models ship inside the
pinned ``opencv-python-headless`` 4.x wheel (``cv2.data.haarcascades``) and so
work offline. ``cv2.FaceDetectorYN`` needs an ONNX file no installed package
carries; the registry packages that bundle a CNN face model (e.g.
``facenet-pytorch``'s MTCNN) pin torch/numpy/Pillow versions incompatible with
ours. On the corpus face sources (223 single-face portraits) it finds exactly
one face in 220 and never an extra one (``benchmarks/bench_guardrails.py``);
tilted and profile faces are retried with rotated (±20°) and profile passes, on
a smaller copy, only when the upright pass finds nothing.
"""
from __future__ import annotations

import hashlib
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from PIL import Image

from core.imageio import DecodedImage

if TYPE_CHECKING:  # pragma: no cover
    from core.scoring.detector import Detector

#: Detection runs on a grey copy whose longer side is at most this (speed; faces stay > 20 px).
DETECT_MAX_SIDE = 512
#: Smallest face searched for, as a share of the image's shorter side (tiny background faces are
#: too small to score meaningfully once upscaled to the model input).
MIN_FACE_FRACTION = 0.08
#: Absolute floor for the smallest face, in working-image pixels (the cascades' own window is 20 px).
MIN_FACE_PX = 20
#: Raw cascade hits that must overlap for a detection (higher = fewer false faces).
MIN_NEIGHBORS = 5
SCALE_FACTOR = 1.1
#: The fallback passes (rotated, profile) only run on images where the upright pass found nothing;
#: a coarser scale step keeps their cost down.
FALLBACK_SCALE_FACTOR = 1.1
#: The fallback passes work on a smaller copy (longer side at most this): they run on every image
#: without an upright face, and four passes at full working size would quadruple the cost.
FALLBACK_MAX_SIDE = 320
#: In-plane rotations (degrees) tried when the upright pass finds nothing.
FALLBACK_ANGLES = (-20.0, 20.0)
#: Boxes overlapping more than this (intersection over the smaller box) are one face.
NMS_OVERLAP = 0.5
#: Margin added on each side of a face box before scoring, as a share of the box side.
CROP_MARGIN = 0.25
#: At most this many faces (the most confident) are scored by the detector.
MAX_SCORED_FACES = 8

_CASCADES = {
    "frontal": "haarcascade_frontalface_alt2.xml",
    "profile": "haarcascade_profileface.xml",
}


@dataclass
class Face:
    """One detected face; ``box`` is (x0, y0, x1, y1) in original pixels, x1/y1 exclusive."""

    box: tuple[int, int, int, int]
    confidence: float  #: detection strength in [0, 1] from cascade agreement (not a probability)
    score: float | None = None  #: calibrated fake probability of the face crop
    logit: float | None = None  #: the detector's image logit for the crop
    crop_box: tuple[int, int, int, int] | None = None  #: the box with margin that was scored
    pass_name: str = "frontal"  #: which detection pass found it

    @property
    def side(self) -> int:
        """Shorter side of the box in original pixels."""
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])

    def to_json(self) -> dict[str, Any]:
        return {
            "box": [int(v) for v in self.box],
            "score": None if self.score is None else round(float(self.score), 6),
            "logit": None if self.logit is None else round(float(self.logit), 6),
            "confidence": round(float(self.confidence), 4),
            "crop_box": None if self.crop_box is None else [int(v) for v in self.crop_box],
            "pass": self.pass_name,
        }


class FaceDetectorUnavailable(RuntimeError):
    """OpenCV lacks the cascade files (e.g. opencv-python 5.x)."""


#: One set of cascades per thread: ``cv2.CascadeClassifier.detectMultiScale2`` keeps per-call scale
#: data inside the object and is not thread-safe (Streamlit runs every session in its own thread; a
#: shared cascade failed with ``getScaleData`` assertions under four concurrent sessions). Loading
#: one is ~30 ms, once per thread.
_LOCAL = threading.local()


def _cascade(kind: str) -> "cv2.CascadeClassifier":
    """This thread's cascade of ``kind`` (loaded on first use in the thread)."""
    cache = getattr(_LOCAL, "cascades", None)
    if cache is None:
        cache = _LOCAL.cascades = {}
    cascade = cache.get(kind)
    if cascade is None:
        cascade = cache[kind] = _load_cascade(kind)
    return cascade


def _load_cascade(kind: str) -> "cv2.CascadeClassifier":
    data = getattr(cv2, "data", None)
    if data is None or not hasattr(cv2, "CascadeClassifier"):
        raise FaceDetectorUnavailable(
            "This OpenCV build has no Haar cascades; install opencv-python-headless 4.x as pinned."
        )
    cascade = cv2.CascadeClassifier(data.haarcascades + _CASCADES[kind])
    if cascade.empty():
        raise FaceDetectorUnavailable(f"Could not load {_CASCADES[kind]} from {data.haarcascades}.")
    return cascade


def _confidence(neighbors: int) -> float:
    """Map cascade agreement (overlapping raw hits) to [0, 1); 10 hits → 0.5."""
    return float(neighbors) / (float(neighbors) + 10.0)


def _run(cascade: "cv2.CascadeClassifier", gray: np.ndarray, min_side: int,
         scale_factor: float = SCALE_FACTOR) -> list[tuple[np.ndarray, int]]:
    rects, counts = cascade.detectMultiScale2(
        gray, scaleFactor=scale_factor, minNeighbors=MIN_NEIGHBORS, minSize=(min_side, min_side)
    )
    return [(np.asarray(r, dtype=np.float64), int(n)) for r, n in zip(rects, np.ravel(counts))]


def _rotated_pass(gray: np.ndarray, angle: float, min_side: int) -> list[tuple[tuple[float, ...], int]]:
    """Run the frontal cascade on a rotated copy; map boxes back as axis-aligned hulls."""
    h, w = gray.shape
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
    rotated = cv2.warpAffine(gray, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inv = cv2.invertAffineTransform(m)
    out = []
    for (x, y, bw, bh), n in _run(_cascade("frontal"), rotated, min_side, FALLBACK_SCALE_FACTOR):
        corners = np.array([[x, y, 1], [x + bw, y, 1], [x, y + bh, 1], [x + bw, y + bh, 1]])
        pts = corners @ inv.T
        # Keep the box's size around its mapped centre (an axis-aligned hull would be too big).
        cx, cy = pts[:, 0].mean(), pts[:, 1].mean()
        out.append(((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), n))
    return out


def _nms(cands: list[tuple[tuple[float, float, float, float], float, str]]) -> list[tuple[tuple[float, ...], float, str]]:
    """Keep the most confident of boxes that overlap by more than NMS_OVERLAP of the smaller one."""
    kept: list[tuple[tuple[float, ...], float, str]] = []
    for box, conf, name in sorted(cands, key=lambda c: -c[1]):
        area = (box[2] - box[0]) * (box[3] - box[1])
        dup = False
        for other, _, _ in kept:
            iw = min(box[2], other[2]) - max(box[0], other[0])
            ih = min(box[3], other[3]) - max(box[1], other[1])
            if iw > 0 and ih > 0:
                small = min(area, (other[2] - other[0]) * (other[3] - other[1]))
                if iw * ih > NMS_OVERLAP * small:
                    dup = True
                    break
        if not dup:
            kept.append((box, conf, name))
    return kept


def detect_faces(image: Image.Image) -> list[Face]:
    """Faces in an RGB image, most confident first, boxes in original pixels."""
    rgb = np.asarray(image.convert("RGB"))
    height, width = rgb.shape[:2]
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    scale = min(1.0, DETECT_MAX_SIDE / max(width, height))
    if scale < 1.0:
        gray = cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))),
                          interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(gray)
    gh, gw = gray.shape
    min_side = max(MIN_FACE_PX, int(MIN_FACE_FRACTION * min(gh, gw)))
    if min(gh, gw) < min_side:
        return []

    cands: list[tuple[tuple[float, float, float, float], float, str]] = []
    for (x, y, bw, bh), n in _run(_cascade("frontal"), gray, min_side):
        cands.append(((x, y, x + bw, y + bh), _confidence(n), "frontal"))
    fscale = 1.0
    if not cands:
        fscale = min(1.0, FALLBACK_MAX_SIDE / max(gh, gw))
        small = gray if fscale == 1.0 else cv2.resize(
            gray, (max(1, round(gw * fscale)), max(1, round(gh * fscale))), interpolation=cv2.INTER_AREA)
        sh, sw = small.shape
        fmin = max(MIN_FACE_PX, int(MIN_FACE_FRACTION * min(sh, sw)))
        for angle in FALLBACK_ANGLES:
            for box, n in _rotated_pass(small, angle, fmin):
                cands.append((box, _confidence(n), f"rotated{angle:+.0f}"))
        for (x, y, bw, bh), n in _run(_cascade("profile"), small, fmin, FALLBACK_SCALE_FACTOR):
            cands.append(((x, y, x + bw, y + bh), _confidence(n), "profile"))
        flipped = np.ascontiguousarray(small[:, ::-1])
        for (x, y, bw, bh), n in _run(_cascade("profile"), flipped, fmin, FALLBACK_SCALE_FACTOR):
            cands.append(((sw - x - bw, y, sw - x, y + bh), _confidence(n), "profile"))
        cands = [(tuple(v / fscale for v in box), conf, name) for box, conf, name in cands]

    faces = []
    for (x0, y0, x1, y1), conf, name in _nms(cands):
        box = (
            max(0, int(math.floor(x0 / scale))),
            max(0, int(math.floor(y0 / scale))),
            min(width, int(math.ceil(x1 / scale))),
            min(height, int(math.ceil(y1 / scale))),
        )
        if box[2] > box[0] and box[3] > box[1]:
            faces.append(Face(box=box, confidence=conf, pass_name=name))
    return faces


def crop_box(box: tuple[int, int, int, int], width: int, height: int,
             margin: float = CROP_MARGIN) -> tuple[int, int, int, int]:
    """``box`` grown by ``margin`` of its side on each side, clipped to the image."""
    x0, y0, x1, y1 = box
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    return (
        max(0, int(math.floor(x0 - mx))),
        max(0, int(math.floor(y0 - my))),
        min(width, int(math.ceil(x1 + mx))),
        min(height, int(math.ceil(y1 + my))),
    )


def crop_decoded(decoded: DecodedImage, box: tuple[int, int, int, int]) -> DecodedImage:
    """A face crop as a :class:`DecodedImage` (pixels only, never re-encoded: re-encoding
    would add compression the model would then see)."""
    crop = decoded.image.crop(box)
    digest = hashlib.sha256(decoded.sha256.encode() + repr(box).encode()).hexdigest()
    return DecodedImage(
        image=crop, sha256=digest, format=decoded.format, mode="RGB", n_frames=1,
        exif_orientation=None, file_size=0, raw=b"",
    )


def score_faces(decoded: DecodedImage, faces: list[Face], detector: "Detector",
                limit: int = MAX_SCORED_FACES) -> None:
    """Fill ``score``/``logit``/``crop_box`` of the first ``limit`` faces in place."""
    for face in faces[:limit]:
        face.crop_box = crop_box(face.box, decoded.width, decoded.height)
        result = detector.score(crop_decoded(decoded, face.crop_box), name="face", top_k=1)
        face.score = float(result.probability)
        face.logit = float(result.logit)


def faces_for(decoded: DecodedImage, detector: "Detector | None" = None) -> tuple[list[Face], dict[str, float]]:
    """Detect (and, with a detector, score) faces; returns the faces and timings in ms."""
    t0 = time.perf_counter()
    faces = detect_faces(decoded.image)
    t1 = time.perf_counter()
    timings = {"faces_detect": (t1 - t0) * 1e3}
    if detector is not None and faces:
        score_faces(decoded, faces, detector)
        timings["faces_score"] = (time.perf_counter() - t1) * 1e3
    return faces, timings

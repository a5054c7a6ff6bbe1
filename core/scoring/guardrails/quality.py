"""Image-quality guardrails: blur, JPEG quality, effective resolution, screenshot hints.

Why: LaDeDa reads local high-frequency traces. Heavy compression, blur or
upscaling erase exactly those traces, so on such inputs the model's score —
in either direction — deserves less trust, and the policy says so.

This module measures; the limits that turn a measurement into "low quality"
are the policy's and live in :mod:`core.scoring.thresholds`.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
from PIL import Image

from core.scoring.thresholds import BLUR_THRESHOLD, LOW_JPEG_QUALITY, MIN_IMAGE_SIDE, UPSCALE_FRACTION

__all__ = ["BLUR_THRESHOLD", "LOW_JPEG_QUALITY", "MIN_IMAGE_SIDE", "UPSCALE_FRACTION", "QualityReport", "assess_quality",
           "blur_value", "blur_values", "estimate_jpeg_quality", "jpeg_tables_info"]

#: Blur is measured on a grey copy whose longer side is scaled down to this many pixels, so the
#: value does not depend on the upload's resolution. Smaller images are measured as they are
#: (upscaling would invent blur; the resolution check reports them).
BLUR_REFERENCE_SIDE = 512
#: The image is cut into BLUR_GRID × BLUR_GRID tiles; the blur value is the mean Laplacian
#: variance of the sharpest BLUR_TOP_SHARE of them, so a sharp subject on a smooth or bokeh
#: background (a portrait, a horizon) counts as sharp.
BLUR_GRID = 4
BLUR_TOP_SHARE = 0.25
#: Exact screen sizes (width, height), either orientation: a hint (never proof) of a screenshot.
SCREEN_SIZES = frozenset({
    (1280, 720), (1280, 800), (1280, 1024), (1366, 768), (1440, 900), (1536, 864), (1600, 900),
    (1680, 1050), (1920, 1080), (1920, 1200), (2560, 1080), (2560, 1440), (2560, 1600), (2880, 1800),
    (3024, 1964), (3456, 2234), (3840, 2160), (5120, 2880),
    (750, 1334), (828, 1792), (1080, 1920), (1080, 2340), (1080, 2400), (1125, 2436), (1170, 2532),
    (1179, 2556), (1242, 2208), (1242, 2688), (1284, 2778), (1290, 2796), (1440, 3120), (1440, 3200),
    (1536, 2048), (1620, 2160), (1668, 2388), (2048, 2732),
})
#: Share of identical horizontal neighbours (on a 128×128 copy) above which areas look like flat UI.
FLAT_SHARE = 0.6
_SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}


# -- JPEG quality ------------------------------------------------------------
@lru_cache(maxsize=1)
def _reference_tables() -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """libjpeg's tables at every quality 1–100, read back through Pillow so they are in the
    same order as the tables Pillow reports for any file."""
    img = Image.new("RGB", (8, 8), (128, 128, 128))
    out = {}
    for q in range(1, 101):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=q)
        tables = Image.open(io.BytesIO(buf.getvalue())).quantization
        out[q] = (np.asarray(tables[0], dtype=np.float64), np.asarray(tables[1], dtype=np.float64))
    return out


def jpeg_tables_info(img: Image.Image) -> tuple[float | None, bool]:
    """(IJG-equivalent quality 1–100 or None, whether the tables are exactly libjpeg's).

    Tables written by libjpeg (Pillow, most web tools) match one quality exactly. Camera and
    editor tables do not; the best fit on the mean absolute log-ratio (luma weighted 2:1 over
    chroma) is then an equivalent quality, good to a few points.
    """
    tables = getattr(img, "quantization", None)
    if not tables or len(tables.get(0, [])) != 64:
        return None, False
    luma = np.maximum(np.asarray(tables[0], dtype=np.float64), 1.0)
    chroma = np.maximum(np.asarray(tables[1], dtype=np.float64), 1.0) if len(tables.get(1, [])) == 64 else None
    best_q, best_err, exact = 50, float("inf"), False
    for q, (ref_l, ref_c) in _reference_tables().items():
        err = 2.0 * float(np.mean(np.abs(np.log(luma / ref_l))))
        if chroma is not None:
            err += float(np.mean(np.abs(np.log(chroma / ref_c))))
        if err < best_err:
            best_q, best_err = q, err
            exact = bool(np.array_equal(luma, ref_l) and (chroma is None or np.array_equal(chroma, ref_c)))
    return float(best_q), exact


def estimate_jpeg_quality(img: Image.Image) -> float | None:
    """IJG-equivalent quality (1–100) from the quantisation tables, or None if not a JPEG."""
    return jpeg_tables_info(img)[0]


# -- blur --------------------------------------------------------------------
def _reference_grey(image: Image.Image) -> np.ndarray:
    grey = np.asarray(image.convert("L"))
    h, w = grey.shape
    scale = BLUR_REFERENCE_SIDE / max(h, w)
    if scale < 1.0:
        grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return grey


def blur_values(image: Image.Image) -> tuple[float, float]:
    """(sharpest-tiles value, whole-image value): variance of the Laplacian at the reference size."""
    lap = cv2.Laplacian(_reference_grey(image).astype(np.float64), cv2.CV_64F)
    whole = float(lap.var())
    h, w = lap.shape
    tiles = sorted(
        (float(t.var()) for i in range(BLUR_GRID) for j in range(BLUR_GRID)
         if (t := lap[i * h // BLUR_GRID:(i + 1) * h // BLUR_GRID, j * w // BLUR_GRID:(j + 1) * w // BLUR_GRID]).size),
        reverse=True,
    )
    if not tiles:
        return whole, whole
    k = max(1, round(BLUR_TOP_SHARE * len(tiles)))
    return float(np.mean(tiles[:k])), whole


def blur_value(image: Image.Image) -> float:
    """Sharpness of the sharpest quarter of the image (higher = sharper); see :func:`blur_values`."""
    return blur_values(image)[0]


# -- the report --------------------------------------------------------------
@dataclass
class QualityReport:
    blur: float  #: sharpest-tiles Laplacian variance at the reference size (higher = sharper)
    blurry: bool  #: blur < BLUR_THRESHOLD: no fine detail anywhere in the image
    jpeg_quality: float | None  #: IJG-equivalent quality, None when not a JPEG
    low_jpeg_quality: bool
    width: int
    height: int
    model_input: tuple[int, int] | None  #: (height, width) the model resizes to
    upscaled: bool  #: smaller than the model input: the model sees interpolated pixels
    heavily_upscaled: bool  #: shorter side ratio below UPSCALE_FRACTION
    screenshot_hints: list[str] = field(default_factory=list)
    blur_whole: float | None = None  #: whole-image Laplacian variance (texture amount; not used by the policy)
    jpeg_standard_tables: bool = False  #: tables are exactly libjpeg's (the estimate is exact)
    jpeg_subsampling: str | None = None
    too_small: bool = False  #: shorter side below MIN_IMAGE_SIDE, whatever the model input

    @property
    def low_quality(self) -> bool:
        return self.blurry or self.low_jpeg_quality or self.heavily_upscaled or self.too_small

    @property
    def resolution_ratio(self) -> float | None:
        """min(image side / model side); below 1 the model sees upscaling."""
        if not self.model_input:
            return None
        return min(self.width / self.model_input[1], self.height / self.model_input[0])

    @property
    def likely_screenshot(self) -> bool:
        return len(self.screenshot_hints) >= 2

    def to_json(self) -> dict[str, Any]:
        ratio = self.resolution_ratio
        return {
            "blur": round(self.blur, 2), "blurry": self.blurry, "blur_threshold": BLUR_THRESHOLD,
            "blur_whole_image": None if self.blur_whole is None else round(self.blur_whole, 2),
            "jpeg_quality": self.jpeg_quality, "low_jpeg_quality": self.low_jpeg_quality,
            "jpeg_quality_threshold": LOW_JPEG_QUALITY, "jpeg_standard_tables": self.jpeg_standard_tables,
            "jpeg_subsampling": self.jpeg_subsampling,
            "effective_resolution": [self.width, self.height],
            "model_input": list(self.model_input) if self.model_input else None,
            "resolution_ratio": None if ratio is None else round(ratio, 4),
            "upscaled": self.upscaled, "heavily_upscaled": self.heavily_upscaled,
            "too_small": self.too_small, "min_image_side": MIN_IMAGE_SIDE,
            "screenshot_hints": self.screenshot_hints, "likely_screenshot": self.likely_screenshot,
            "low_quality": self.low_quality,
        }


def _screenshot_hints(container: Image.Image, image: Image.Image, has_camera: bool) -> list[str]:
    if has_camera:
        return []
    hints = []
    w, h = image.size
    if (container.format or "") == "PNG":
        hints.append("lossless PNG without camera metadata")
    if (w, h) in SCREEN_SIZES or (h, w) in SCREEN_SIZES:
        hints.append(f"size {w}×{h} is a common screen resolution")
    arr = np.asarray(image.convert("L").resize((128, 128)), dtype=np.int16)
    flat = float(np.mean(np.diff(arr, axis=1) == 0))
    if flat > FLAT_SHARE:
        hints.append(f"{flat:.0%} of neighbouring pixels are identical (flat UI-like areas)")
    return hints


def assess_quality(container: Image.Image, image: Image.Image, model_input_size: tuple[int, int] | None,
                   has_camera: bool = False) -> QualityReport:
    """``container`` is the file as opened (for JPEG tables); ``image`` the decoded upright RGB;
    ``model_input_size`` is (height, width) of the model input, when known."""
    blur, whole = blur_values(image)
    q, exact, sampling = None, False, None
    if container.format == "JPEG":
        q, exact = jpeg_tables_info(container)
        try:
            from PIL import JpegImagePlugin

            sampling = _SUBSAMPLING.get(JpegImagePlugin.get_sampling(container))
        except Exception:  # not every JPEG-like container exposes its layers
            sampling = None
    w, h = image.size
    upscaled = heavily = False
    if model_input_size:
        mh, mw = model_input_size
        upscaled = w < mw or h < mh
        heavily = min(w / mw, h / mh) < UPSCALE_FRACTION
    return QualityReport(
        blur=blur, blurry=blur < BLUR_THRESHOLD, jpeg_quality=q,
        low_jpeg_quality=q is not None and q < LOW_JPEG_QUALITY, width=w, height=h,
        model_input=tuple(model_input_size) if model_input_size else None, upscaled=upscaled,
        heavily_upscaled=heavily, screenshot_hints=_screenshot_hints(container, image, has_camera),
        blur_whole=whole, jpeg_standard_tables=exact, jpeg_subsampling=sampling,
        too_small=min(w, h) < MIN_IMAGE_SIDE,
    )

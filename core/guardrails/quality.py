"""Image-quality guardrails: blur, JPEG quality, effective resolution, screenshot hints.

Why: LaDeDa reads local high-frequency traces. Heavy compression, blur or
upscaling erase exactly those traces, so on such inputs the model's score —
in either direction — deserves less trust, and the policy says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from PIL import Image

#: Blur is measured on a grey copy whose longer side is this many pixels, so the
#: value does not depend on the upload's resolution.
BLUR_REFERENCE_SIDE = 512
#: Variance of the Laplacian below which an image is called blurry (on the reference size).
BLUR_THRESHOLD = 40.0
#: Estimated JPEG quality below which fine detail is considered destroyed.
LOW_JPEG_QUALITY = 40
#: An image whose shorter side is below this share of the model input is heavily upscaled.
UPSCALE_FRACTION = 0.5
#: Common phone/monitor widths, a hint (never proof) that a PNG is a screenshot.
SCREEN_WIDTHS = {720, 750, 828, 1080, 1125, 1170, 1179, 1242, 1284, 1290, 1366, 1440, 1536, 1600, 1920, 2048,
                 2560, 2880, 3024, 3840}

# IJG (libjpeg) reference tables; quality q scales them (the standard formula).
_STD_LUMA = np.array([16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
                      14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
                      92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)
_STD_CHROMA = np.array([17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99,
                        99, 47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32, dtype=np.float64)


def _scaled(table: np.ndarray, quality: int) -> np.ndarray:
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return np.clip(np.floor((table * scale + 50) / 100), 1, 255)


def estimate_jpeg_quality(img: Image.Image) -> float | None:
    """IJG-equivalent quality (1–100) from the quantisation tables, or None if not a JPEG.

    Tables are compared sorted, so the estimate does not depend on whether the
    container stores them in zig-zag or natural order.
    """
    tables = getattr(img, "quantization", None)
    if not tables:
        return None
    luma = np.sort(np.asarray(tables.get(0, []), dtype=np.float64))
    chroma = np.sort(np.asarray(tables[1], dtype=np.float64)) if 1 in tables else None
    if luma.size != 64:
        return None
    best_q, best_err = 50, float("inf")
    for q in range(1, 101):
        err = np.abs(np.sort(_scaled(_STD_LUMA, q)) - luma).mean()
        if chroma is not None and chroma.size == 64:
            err += 0.5 * np.abs(np.sort(_scaled(_STD_CHROMA, q)) - chroma).mean()
        if err < best_err:
            best_q, best_err = q, err
    return float(best_q)


def blur_value(image: Image.Image) -> float:
    """Variance of the Laplacian on a grey copy resized to the reference side."""
    grey = np.asarray(image.convert("L"))
    h, w = grey.shape
    scale = BLUR_REFERENCE_SIDE / max(h, w)
    if abs(scale - 1) > 1e-6:
        grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))),
                          interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    return float(cv2.Laplacian(grey.astype(np.float64), cv2.CV_64F).var())


@dataclass
class QualityReport:
    blur: float
    blurry: bool
    jpeg_quality: float | None
    low_jpeg_quality: bool
    width: int
    height: int
    model_input: tuple[int, int] | None
    upscaled: bool  #: smaller than the model input: the model sees interpolated pixels
    heavily_upscaled: bool
    screenshot_hints: list[str] = field(default_factory=list)

    @property
    def low_quality(self) -> bool:
        return self.blurry or self.low_jpeg_quality or self.heavily_upscaled

    def to_json(self) -> dict[str, Any]:
        return {
            "blur": round(self.blur, 2), "blurry": self.blurry, "blur_threshold": BLUR_THRESHOLD,
            "jpeg_quality": self.jpeg_quality, "low_jpeg_quality": self.low_jpeg_quality,
            "effective_resolution": [self.width, self.height],
            "model_input": list(self.model_input) if self.model_input else None,
            "upscaled": self.upscaled, "heavily_upscaled": self.heavily_upscaled,
            "screenshot_hints": self.screenshot_hints, "low_quality": self.low_quality,
        }


def _screenshot_hints(container: Image.Image, image: Image.Image, has_camera: bool) -> list[str]:
    hints = []
    fmt = container.format or ""
    if fmt == "PNG" and not has_camera:
        hints.append("lossless PNG without camera metadata")
    if image.width in SCREEN_WIDTHS and not has_camera:
        hints.append(f"width {image.width} px matches a common screen")
    arr = np.asarray(image.convert("L").resize((128, 128)))
    flat = float(np.mean(np.abs(np.diff(arr.astype(np.int16), axis=1)) == 0))
    if flat > 0.6:
        hints.append(f"{flat:.0%} of neighbouring pixels are identical (flat UI-like areas)")
    return hints


def assess_quality(container: Image.Image, image: Image.Image, model_input_size: tuple[int, int] | None,
                   has_camera: bool = False) -> QualityReport:
    """``container`` is the file as opened (for JPEG tables); ``image`` the decoded upright RGB."""
    blur = blur_value(image)
    q = estimate_jpeg_quality(container) if (container.format == "JPEG") else None
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
    )

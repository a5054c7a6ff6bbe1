"""Is a map faithful? The deletion test, and the figures it gave for the shipped maps.

Why: a map an analyst reads as "why it says fake" must point at what the part
actually relies on. The test (``benchmarks/explain_faithfulness.py``):
replace the top :data:`AREA` of the image's area by the map with a blurred
copy, re-score that part, and compare the drop in its logit toward the other
class with the drop from :data:`RANDOM_MASKS` random masks of the same area.
Random masks are drawn inside the part's field of view (CLIP: its centre
crop; LaDeDa: the area its patches cover), as smooth random blobs on a 14×14
grid, so they are shaped like a map's top area rather than scattered pixels.

The benchmark records its figures in :data:`RECORD_PATH`; :func:`caption_note`
turns them into the sentence under each map, and says so when a map does not
beat random deletion.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from core.paths import REPO_ROOT

#: Share of the image's area deleted.
AREA = 0.10
#: Random masks per image.
RANDOM_MASKS = 10
#: Where the benchmark records the shipped maps' figures (read by the captions).
RECORD_PATH = REPO_ROOT / "data" / "models" / "explain_faithfulness.json"
#: Map names, as in the benchmark's JSON.
PARTS = {"clip_gradcam": "CLIP GradCAM", "ladeda_patch": "LaDeDa's patch map"}


def top_area_mask(values: np.ndarray, allowed: np.ndarray | None = None, area: float = AREA) -> np.ndarray:
    """The ``area`` share of all pixels with the highest ``values`` (only where ``allowed``), as a bool mask.

    When fewer pixels are allowed than the area asks for, every allowed pixel is taken."""
    v = np.asarray(values, dtype=np.float64).ravel().copy()
    if allowed is not None:
        v[~np.asarray(allowed, dtype=bool).ravel()] = -np.inf
    k = min(int(round(area * v.size)), int(np.isfinite(v).sum()))
    mask = np.zeros(v.size, dtype=bool)
    if k > 0:
        mask[np.argpartition(-v, k - 1)[:k]] = True
    return mask.reshape(np.shape(values))


def random_masks(shape: tuple[int, int], allowed: np.ndarray | None, rng: np.random.Generator,
                 count: int = RANDOM_MASKS, area: float = AREA, cells: int = 14) -> list[np.ndarray]:
    """``count`` masks of the same area as :func:`top_area_mask`: top pixels of smooth random fields
    (uniform noise on a ``cells``×``cells`` grid, bilinear to the image), inside ``allowed``."""
    h, w = shape
    out = []
    for _ in range(count):
        noise = Image.fromarray(rng.random((cells, cells)).astype(np.float32), "F")
        field = np.asarray(noise.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float64)
        field = field + 1e-9 * rng.random((h, w))  # break the ties of flat regions at random
        out.append(top_area_mask(field, allowed, area))
    return out


def blur_radius(size: tuple[int, int]) -> float:
    """Gaussian blur radius for the deleted area: 1/32 of the shorter side (7 px of CLIP's 224 input)."""
    return max(2.0, min(size) / 32.0)


def blurred(image: Image.Image) -> Image.Image:
    return image.convert("RGB").filter(ImageFilter.GaussianBlur(blur_radius(image.size)))


def delete(image: Image.Image, blur: Image.Image, mask: np.ndarray) -> Image.Image:
    """``image`` with the ``mask`` pixels replaced by the blurred copy."""
    m = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255, "L")
    out = image.convert("RGB").copy()
    out.paste(blur, mask=m)
    return out


def drop(before: float, after: float) -> float:
    """How far a deletion moved the part's logit toward the other class: the part calls fake
    (logit > 0): ``before − after``; it calls real: ``after − before``."""
    return float(before - after) if before > 0 else float(after - before)


# ---------------------------------------------------------------------------
# the recorded figures, for the captions
# ---------------------------------------------------------------------------
def recorded(path: str | Path | None = None) -> dict[str, Any] | None:
    """The benchmark's recorded result (``--record``), or None when none is recorded."""
    p = Path(path) if path is not None else RECORD_PATH
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def caption_note(part: str, record: dict[str, Any] | None = None) -> str | None:
    """One sentence on how the map did in the deletion test, or None when it was never measured."""
    rec = record if record is not None else recorded()
    if not rec or part not in (rec.get("parts") or {}):
        return None
    r = rec["parts"][part]
    n, wins = int(rec.get("n", 0)), int(r["wins"])
    where = rec.get("data") or "the benchmark images"
    if n == 0:
        return None
    head = (f"Deletion test on {n} {where}: blurring the map's top {AREA:.0%} moved {PARTS.get(part, part)}'s "
            f"logit toward the other class by {float(r['mean_drop']):.2f} on average, random areas by "
            f"{float(r['mean_random_drop']):.2f}")
    if wins / n >= 0.5 and float(r["mean_drop"]) > float(r["mean_random_drop"]):
        if float(r["mean_drop"]) <= 0:  # better than random, yet blurring it does not weaken the call
            return (f"{head}; the map beat random areas on {wins} of {n} images, but blurring it did not, on "
                    "average, weaken the part's call: read it as where the part looks most, not as proof.")
        return f"{head}; the map beat random areas on {wins} of {n} images."
    return (f"{head}; the map beat random areas on only {wins} of {n} images: it does not beat random deletion, "
            "so do not read its hot spots as what the part relied on.")

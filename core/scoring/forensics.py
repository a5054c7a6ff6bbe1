"""Classic forensic views of one image: error level analysis, a noise residual, and the
model's own input representation. Evidence for people only: none of them feeds the tier.

Why these three: ELA and noise are what analysts know from InVID and Sherloq,
and each finds a region whose history differs from the rest of the image; the
model-input view shows what LaDeDa actually reads (its NPR or right-diagonal
residual after the resize), which explains both what it can see and what the
resize already destroyed. Every view is drawn on a *fixed* amplification, like
the heatmap's fixed logit scale: the same brightness means the same error on
every image, never a per-image stretch. Each layer carries one sentence on what
it shows and one on how it misleads, written for the analyst reading it.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter

from core.errors import InvalidArgumentError
from core.imageio import DecodedImage
from core.model.preprocess import PreprocessSpec, to_model_input
from core.model.representations import REPRESENTATIONS

#: JPEG quality the image is re-saved at for ELA (the usual choice of ELA tools).
ELA_QUALITY = 90
#: ELA difference amplification (×15: a change of 17 grey levels is full brightness).
ELA_SCALE = 15.0
#: Noise residual amplification around mid-grey (×4 of the difference to the 3×3 median).
NOISE_SCALE = 4.0
#: Model-input view: |representation| in normalised units drawn at full brightness at this value.
MODEL_VIEW_LIMIT = 1.0
#: Longest side of the layer images (the views are for display; the original is never changed).
MAX_SIDE = 1024

#: What each input representation is, in words (for the model-input layer).
REPRESENTATION_WORDS = {
    "NPR": "the NPR residual (each pixel minus the top-left pixel of its 2×2 cell, which exposes upsampling traces)",
    "right_diag": "the right-diagonal gradient (a 3×3 high-pass filter along one diagonal)",
    "left_diag": "the left-diagonal gradient (a 3×3 high-pass filter along one diagonal)",
    "x_grad": "the horizontal Sobel gradient",
    "y_grad": "the vertical Sobel gradient",
    "raw": "the normalised pixels themselves (no residual)",
}

LAYER_KEYS = ("ela", "noise", "model_input")


@dataclass
class ForensicLayer:
    """One view: an RGB image the size of the displayed original, and how to read it."""

    key: str
    title: str
    image: Image.Image
    shows: str  #: one sentence: what it shows
    misleads: str  #: one sentence: how it misleads
    values: np.ndarray = field(repr=False)  #: per-pixel magnitude (H×W float32) at the layer's resolution
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "shows": self.shows, "misleads": self.misleads,
                "params": dict(self.params), "size": list(self.image.size),
                "mean": round(float(self.values.mean()), 4), "p99": round(float(np.percentile(self.values, 99)), 4)}


def _rgb(source: DecodedImage | Image.Image) -> Image.Image:
    image = source.image if isinstance(source, DecodedImage) else source
    return image if image.mode == "RGB" else image.convert("RGB")


def _fit(image: Image.Image, max_side: int | None, resample=Image.Resampling.BILINEAR) -> Image.Image:
    if not max_side or max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)


def error_level(source: DecodedImage | Image.Image, *, quality: int = ELA_QUALITY, scale: float = ELA_SCALE,
                max_side: int | None = MAX_SIDE) -> ForensicLayer:
    """ELA: |image − image re-saved as JPEG at ``quality``|, amplified ×``scale``."""
    if not 1 <= int(quality) <= 100:
        raise InvalidArgumentError(f"The ELA quality must be between 1 and 100, got {quality}.")
    image = _rgb(source)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as again:
        resaved = np.asarray(again.convert("RGB"), dtype=np.int16)
    diff = np.abs(np.asarray(image, dtype=np.int16) - resaved).astype(np.float32)
    shown = Image.fromarray(np.clip(diff * scale, 0, 255).astype(np.uint8), "RGB")
    return ForensicLayer(
        key="ela", title=f"Error level analysis (JPEG q{int(quality)}, ×{scale:g})",
        image=_fit(shown, max_side),
        shows=(f"How much each pixel changes when the image is saved again as JPEG at quality {int(quality)} "
               f"(difference ×{scale:g}): a region with a different compression history from the rest — pasted "
               "in, or generated and inserted — stands out as brighter or darker than similar texture around it."),
        misleads=("Edges, fine texture and saturated colours are always bright and flat areas always dark, whatever "
                  "their history, and an image re-saved as a whole (or a PNG, or a screenshot) has one uniform "
                  "history: compare like with like texture, and never read brightness alone as 'fake'."),
        values=diff.mean(axis=2), params={"quality": int(quality), "scale": float(scale)})


def noise_residual(source: DecodedImage | Image.Image, *, scale: float = NOISE_SCALE,
                   max_side: int | None = MAX_SIDE) -> ForensicLayer:
    """High-pass: image − its 3×3 median, drawn around mid-grey ×``scale``."""
    image = _rgb(source)
    arr = np.asarray(image, dtype=np.float32)
    smooth = np.asarray(image.filter(ImageFilter.MedianFilter(3)), dtype=np.float32)
    residual = arr - smooth
    shown = Image.fromarray(np.clip(128.0 + residual * scale, 0, 255).astype(np.uint8), "RGB")
    return ForensicLayer(
        key="noise", title=f"Noise residual (image − 3×3 median, ×{scale:g})",
        image=_fit(shown, max_side),
        shows=("The fine noise left after removing a 3×3 median: a camera's sensor noise is even across a photo, "
               "so a region pasted, painted, retouched or generated separately often shows a different grain."),
        misleads=("Texture, edges and text always look noisy and smooth regions (sky, skin, defocus) always look "
                  "clean, and denoising, compression or resizing flatten the noise of the whole image, so an "
                  "even residual proves nothing either way."),
        values=np.abs(residual).mean(axis=2), params={"filter": "median 3x3", "scale": float(scale)})


def model_input_view(source: DecodedImage | Image.Image, spec: PreprocessSpec, *, limit: float = MODEL_VIEW_LIMIT,
                     max_side: int | None = MAX_SIDE) -> ForensicLayer:
    """The model's input representation (after the spec's resize and normalisation), |value| per channel."""
    decoded = source if isinstance(source, DecodedImage) else None
    image = _rgb(source)
    if decoded is None:
        decoded = DecodedImage(image=image, sha256="", format=None, mode="RGB", n_frames=1, exif_orientation=None,
                               file_size=0, raw=b"")
    model_input = to_model_input(decoded, spec)
    name = spec.input_representation
    with torch.inference_mode():
        rep = REPRESENTATIONS[name](model_input.tensor)[0].permute(1, 2, 0).numpy()
    h, w = rep.shape[:2]
    if name == "raw":
        shown = model_input.resized
        values = np.zeros((h, w), dtype=np.float32)
    else:
        mag = np.abs(rep).astype(np.float32)
        shown = Image.fromarray(np.clip(mag / limit * 255.0, 0, 255).astype(np.uint8), "RGB")
        values = mag.mean(axis=2)
    # Back to the original's aspect (nearest, so model pixels stay visible) for an overlay-like switch.
    target = _fit(image, max_side).size
    shown = shown.resize(target, Image.Resampling.NEAREST) if shown.size != target else shown
    words = REPRESENTATION_WORDS.get(name, name)
    resize = spec.geometry()
    return ForensicLayer(
        key="model_input", title=f"Model input: {name} at {w}×{h}",
        image=shown,
        shows=(f"What the model reads: the image after '{resize}', then {words}, per colour channel "
               f"(|value| of {limit:g} in normalised units is full brightness), stretched back over the image."),
        misleads=("It is the model's input, not its decision: bright areas are where there is detail to read, "
                  "not where the model finds generation traces (that is the heatmap), and the resize step has "
                  "already changed the traces it shows — which is also how a resized fake can slip through."),
        values=values, params={"representation": name, "model_input": [h, w], "limit": float(limit),
                               "resize": resize})


def forensic_layers(source: DecodedImage | Image.Image, spec: PreprocessSpec, *, ela_quality: int = ELA_QUALITY,
                    max_side: int | None = MAX_SIDE) -> list[ForensicLayer]:
    """All three views, in :data:`LAYER_KEYS` order."""
    return [error_level(source, quality=ela_quality, max_side=max_side),
            noise_residual(source, max_side=max_side),
            model_input_view(source, spec, max_side=max_side)]


def layer(key: str, source: DecodedImage | Image.Image, spec: PreprocessSpec, **kwargs: Any) -> ForensicLayer:
    """One view by key (``ela``, ``noise`` or ``model_input``)."""
    if key == "ela":
        return error_level(source, **kwargs)
    if key == "noise":
        return noise_residual(source, **kwargs)
    if key == "model_input":
        return model_input_view(source, spec, **kwargs)
    raise InvalidArgumentError(f"Unknown forensic layer {key!r}; choose from {', '.join(LAYER_KEYS)}.")

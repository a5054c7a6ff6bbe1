"""Training/validation images held in memory, preprocessed by the checkpoint's spec.

Decoding and resizing a 768-px JPEG costs more than a training step on a
small crop, so every image is decoded once, resized exactly as serving will
resize it (``preprocess.resize_image``), and kept as uint8. Batches are random
crops (+ optional flips and post-processing augmentations) normalised with
the spec's mean/std — the same numbers serving computes for that region.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter
from tqdm import tqdm

from core.training.datasets import LabelledImage, list_images
from core.imageio import decode_image
from core.model.preprocess import PreprocessSpec, normalise, resize_image


@dataclass
class CachedImage:
    pixels: np.ndarray  #: H×W×3 uint8 after the spec's resize
    label: int
    source: str
    path: str


def load_cached(root: str | os.PathLike, spec: PreprocessSpec, *, progress: bool = True,
                keep_original: bool = False) -> tuple[list[CachedImage], list[Image.Image]]:
    """Decode + resize every image under ``root`` once. Unreadable files are skipped with a note."""
    items: list[LabelledImage] = list_images(root)
    cached, originals = [], []
    for it in tqdm(items, desc=f"loading {os.path.basename(str(root)) or root}", disable=not progress, leave=False):
        try:
            decoded = decode_image(it.path, exif_policy=spec.exif_policy)
        except Exception as exc:  # a broken file must not stop a training run
            tqdm.write(f"skipping {it.path}: {exc}")
            continue
        cached.append(CachedImage(np.array(resize_image(decoded.image, spec)), it.label, it.source, str(it.path)))
        if keep_original:
            originals.append(decoded.image)
    return cached, originals


def _augment(pixels: np.ndarray, rng: np.random.Generator, jpeg_prob: float, blur_prob: float) -> np.ndarray:
    if jpeg_prob <= 0 and blur_prob <= 0:
        return pixels
    img = Image.fromarray(pixels)
    if blur_prob > 0 and rng.random() < blur_prob:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.1, 2.0))))
    if jpeg_prob > 0 and rng.random() < jpeg_prob:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(rng.integers(40, 100)))
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return np.asarray(img)


def random_crop(pixels: np.ndarray, size: int, rng: np.random.Generator, align: int = 1) -> np.ndarray:
    """A size×size crop; images smaller than ``size`` are reflect-padded first.

    ``align`` > 1 puts the crop's corner on multiples of ``align`` pixels, so the
    crop keeps the phase that serving sees (the 8-px JPEG grid, NPR's 2×2 cells).
    """
    h, w = pixels.shape[:2]
    if h < size or w < size:
        pixels = np.pad(pixels, ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0)), mode="reflect")
        h, w = pixels.shape[:2]
    y = int(rng.integers(0, (h - size) // align + 1)) * align
    x = int(rng.integers(0, (w - size) // align + 1)) * align
    return pixels[y:y + size, x:x + size]


def make_batch(images: list[CachedImage], indices: np.ndarray, spec: PreprocessSpec, crop: int,
               rng: np.random.Generator, *, flip: bool = True, jpeg_prob: float = 0.0,
               blur_prob: float = 0.0, align: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(N×3×crop×crop normalised tensor, N labels as float)."""
    xs, ys = [], []
    for i in indices:
        im = images[int(i)]
        px = _augment(im.pixels, rng, jpeg_prob, blur_prob)
        px = random_crop(px, crop, rng, align)
        if flip and rng.random() < 0.5:
            px = px[:, ::-1]
        xs.append(normalise(np.ascontiguousarray(px), spec))
        ys.append(float(im.label))
    return torch.cat(xs), torch.tensor(ys, dtype=torch.float32)


def full_tensor(image: CachedImage, spec: PreprocessSpec) -> torch.Tensor:
    """The whole image as serving would feed it (1×3×H×W)."""
    return normalise(image.pixels, spec)

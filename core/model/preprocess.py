"""The preprocessing spec that travels with every checkpoint, and the one
function that turns an image into model input by following it.

Training, calibration, evaluation and serving all call :func:`to_model_input`
with the checkpoint's own :class:`PreprocessSpec`, so they cannot disagree on
resize, interpolation, EXIF orientation, colour order or normalisation.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from core.errors import CheckpointError
from core.imageio import DEFAULT_MAX_PIXELS, DecodedImage, ImageSource, decode_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

INPUT_REPRESENTATIONS = ("raw", "NPR", "x_grad", "y_grad", "left_diag", "right_diag")
RESIZE_MODES = ("stretch", "shorter_side", "none")
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
SPEC_VERSION = 1


@dataclass(frozen=True)
class PreprocessSpec:
    """What a checkpoint expects as input. Serialised into every checkpoint.

    - ``resize_mode``: ``stretch`` resizes to exactly ``size`` (height, width),
      ignoring aspect (the official LaDeDa test transform); ``shorter_side``
      scales the shorter side to ``size[0]`` keeping aspect; ``none`` keeps the
      native resolution (capped by ``max_side`` when set).
    - ``interpolation``: Pillow filter name; Pillow always antialiases when
      downscaling, which is what torchvision's ``Resize`` on PIL images does.
    - ``mean``/``std``: per-channel normalisation after scaling to [0, 1].
    - ``colour_order``: channel order fed to the network (``RGB``).
    - ``exif_policy``: ``apply`` rotates by EXIF orientation before resizing.
    - ``input_representation``: what the network computes from the normalised
      tensor before its first conv (NPR, gradients, raw), as in the paper.
    """

    input_representation: str = "NPR"
    resize_mode: str = "stretch"
    size: tuple[int, int] = (256, 256)
    interpolation: str = "bilinear"
    resize_backend: str = "pil"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    colour_order: str = "RGB"
    exif_policy: str = "apply"
    alpha_background: tuple[int, int, int] = (255, 255, 255)
    max_side: int | None = None
    version: int = SPEC_VERSION
    notes: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        problems = []
        if self.input_representation not in INPUT_REPRESENTATIONS:
            problems.append(f"input_representation {self.input_representation!r} not in {INPUT_REPRESENTATIONS}")
        if self.resize_mode not in RESIZE_MODES:
            problems.append(f"resize_mode {self.resize_mode!r} not in {RESIZE_MODES}")
        if self.interpolation not in INTERPOLATIONS:
            problems.append(f"interpolation {self.interpolation!r} not in {tuple(INTERPOLATIONS)}")
        if self.resize_backend != "pil":
            problems.append("resize_backend must be 'pil'")
        if self.colour_order not in ("RGB", "BGR"):
            problems.append("colour_order must be RGB or BGR")
        if self.exif_policy not in ("apply", "ignore"):
            problems.append("exif_policy must be 'apply' or 'ignore'")
        if len(tuple(self.size)) != 2 or min(self.size) < 8:
            problems.append(f"size must be (height, width) of at least 8 px, got {self.size!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            problems.append("mean and std need three values, std positive")
        if problems:
            raise CheckpointError("Invalid preprocessing spec: " + "; ".join(problems))

    # -- serialisation -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("size", "mean", "std", "alpha_background"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "PreprocessSpec":
        if not data:
            raise CheckpointError(
                "This model file has no preprocessing spec, so there is no safe way to feed it images. "
                "Wrap official weights with `python -m core import-official`."
            )
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise CheckpointError(f"Preprocessing spec has unknown fields {sorted(unknown)}; upgrade the code.")
        kwargs = dict(data)
        for key in ("size", "mean", "std", "alpha_background"):
            if key in kwargs and kwargs[key] is not None:
                kwargs[key] = tuple(kwargs[key])
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise CheckpointError(f"Invalid preprocessing spec: {exc}") from None

    def fingerprint(self) -> str:
        """A short, stable hash of everything that changes the model input."""
        d = self.to_dict()
        d.pop("notes", None)
        blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def geometry(self) -> str:
        """The resize step in words, e.g. 'resize to 256x256 (bilinear)' or 'native resolution (max side 768)'."""
        if self.resize_mode == "stretch":
            return f"resize to {self.size[0]}x{self.size[1]} ({self.interpolation})"
        if self.resize_mode == "shorter_side":
            return f"shorter side to {self.size[0]} ({self.interpolation})"
        return "native resolution" + (f" (max side {self.max_side})" if self.max_side else "")

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) of the model input an image of ``width`` × ``height`` becomes under this spec.

        The one answer to "what input does this image become" (as timm's ``resolve_data_config``):
        serving, guardrails and benchmarks ask here instead of assuming a size.
        """
        w, h = target_size(self, int(width), int(height))
        return h, w

    def summary(self) -> str:
        """One line for people: what the model is fed."""
        return (
            f"{self.geometry()}, {self.colour_order}, EXIF {self.exif_policy}, "
            f"mean/std normalised, representation {self.input_representation}"
        )


def official_spec(input_representation: str) -> PreprocessSpec:
    """The official LaDeDa test transform: RGB, Resize((256, 256)), ToTensor, ImageNet norm."""
    return PreprocessSpec(
        input_representation=input_representation,
        notes="Official LaDeDa test preprocessing (torchvision Resize((256,256)) on PIL, bilinear).",
    )


def target_size(spec: PreprocessSpec, width: int, height: int) -> tuple[int, int]:
    """(width, height) the image is resized to under ``spec``."""
    if spec.resize_mode == "stretch":
        return int(spec.size[1]), int(spec.size[0])
    if spec.resize_mode == "shorter_side":
        short = int(spec.size[0])
        scale = short / min(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    if spec.max_side and max(width, height) > spec.max_side:
        scale = spec.max_side / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    return width, height


def resize_image(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """Resize an RGB image as the spec says (Pillow, antialiased on downscale)."""
    w, h = target_size(spec, image.width, image.height)
    if (w, h) == (image.width, image.height):
        return image
    return image.resize((w, h), INTERPOLATIONS[spec.interpolation])


def normalise(array_uint8: np.ndarray, spec: PreprocessSpec) -> torch.Tensor:
    """HxWx3 uint8 → 1x3xHxW float32, scaled to [0, 1] and normalised."""
    arr = np.asarray(array_uint8)
    if spec.colour_order == "BGR":
        arr = arr[..., ::-1]
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(3, 1, 1)
    return ((t - mean) / std).unsqueeze(0)


@dataclass
class ModelInput:
    """The tensor the network sees, and how it maps back to the original image."""

    tensor: torch.Tensor  #: 1x3xHxW float32
    decoded: DecodedImage
    resized: Image.Image  #: the RGB image at model resolution

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Multiply model-input x/y by these to get original-image pixels."""
        return self.decoded.width / self.resized.width, self.decoded.height / self.resized.height


def to_model_input(
    source: ImageSource | DecodedImage,
    spec: PreprocessSpec,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ModelInput:
    """Bytes, a path, or an already decoded image → model input, by the spec."""
    decoded = source if isinstance(source, DecodedImage) else decode_image(
        source, max_pixels=max_pixels, exif_policy=spec.exif_policy
    )
    resized = resize_image(decoded.image, spec)
    tensor = normalise(np.array(resized), spec)
    return ModelInput(tensor=tensor, decoded=decoded, resized=resized)

"""Safe image decoding: bytes or a path in, an upright 8-bit RGB image out.

Handles what analysts actually upload: decompression bombs, truncated files,
animated images (first frame), palette/alpha/greyscale/CMYK/16-bit modes, and
EXIF orientation. Phones' formats come too: AVIF through Pillow's own codec,
HEIC/HEIF through the ``pillow-heif`` plugin (registered here, once, so every
door that decodes through this module reads them). Failures raise typed
:mod:`core.errors` with readable text.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import (DetectorError, ImageDecodeError, ImageTooLargeError, TruncatedImageError,
                         UnsupportedImageError)

#: Default pixel limit (width x height); 80 MP covers any real camera.
DEFAULT_MAX_PIXELS = 80_000_000

ImageSource = Union[bytes, bytearray, memoryview, str, Path]

_EXIF_ORIENTATION_TAG = 0x0112


def _register_heif() -> str | None:
    """Register the HEIC/HEIF opener; the reason it is unavailable, or None."""
    try:
        import pillow_heif
    except ImportError as exc:  # the product still reads every other format
        return f"HEIC/HEIF needs the pillow-heif package ({exc})."
    pillow_heif.register_heif_opener()
    return None


def _avif_available() -> bool:
    from PIL import features

    try:
        return bool(features.check_module("avif"))
    except Exception:  # noqa: BLE001 - an old Pillow without the module name
        return False


HEIF_UNAVAILABLE = _register_heif()
AVIF_AVAILABLE = _avif_available()

#: File suffixes every door lists (folders, uploads, manifests): one list for all of them.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif",
                            ".heic", ".heif", ".avif"})
#: The formats in words, for messages and the uploader's label.
SUPPORTED_FORMATS = "JPEG, PNG, WebP, BMP, TIFF, GIF, HEIC/HEIF, AVIF"


@dataclass
class DecodedImage:
    """An upright RGB image plus the facts about the file it came from."""

    image: Image.Image  #: RGB, orientation applied (when the policy says so)
    sha256: str  #: of the original bytes
    format: str | None  #: container format as Pillow names it ("JPEG", "PNG", ...)
    mode: str  #: the file's original colour mode
    n_frames: int
    exif_orientation: int | None
    file_size: int
    raw: bytes = field(repr=False)

    @property
    def frames_note(self) -> str | None:
        """Said wherever the image is shown: a multi-image file (GIF, HEIC burst or sequence) is read by its first image."""
        if self.n_frames > 1:
            return f"The file holds {self.n_frames} images; the first one is analysed."
        return None

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


def read_bytes(source: ImageSource) -> bytes:
    """Read a path or pass bytes through; a missing file is a decode error."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    path = Path(source)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageDecodeError(f"File not found: {path}") from None
    except IsADirectoryError:
        raise ImageDecodeError(f"Expected an image file but got a folder: {path}") from None
    except OSError as exc:
        raise ImageDecodeError(f"Could not read {path}: {exc.strerror or exc}") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if (mode.startswith("I;16") or arr.max(initial=0) > 255) else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBA":
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    # L, 1, CMYK, YCbCr, LAB, HSV: Pillow's own conversions are correct.
    return img.convert("RGB")


def _open_header(raw: bytes, max_pixels: int) -> Image.Image:
    """Open ``raw`` reading only the header: refuses empty files, non-images and pixel bombs.

    Call inside ``warnings.catch_warnings()`` with DecompressionBombWarning as an error.
    Messages name no interface (the CLI and the dashboard both show them).
    """
    if not raw:
        raise UnsupportedImageError("The file is empty.")
    try:
        img = Image.open(io.BytesIO(raw))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLargeError("The image has too many pixels to decode safely.") from None
    except UnidentifiedImageError:
        raise _unrecognised(raw) from None
    except Exception as exc:  # Pillow plugins raise assorted errors on hostile headers
        raise ImageDecodeError(f"The image header could not be read ({type(exc).__name__}).") from None
    family = is_heif_family(raw)
    if family and bmff_truncated(raw):
        img.close()
        raise TruncatedImageError(f"The {family} file is truncated (it ends before its image data does). "
                                  "Re-export or re-download it.")
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError("The image has no pixels.")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"The image is {width}x{height} = {width * height / 1e6:.1f} MP, above the limit of "
            f"{max_pixels / 1e6:.1f} MP. Downscale it and try again."
        )
    return img


def is_heif_family(raw: bytes) -> str | None:
    """'HEIC' or 'AVIF' when the bytes are an ISO-BMFF image container (``ftyp`` box), else None."""
    if raw[4:8] != b"ftyp":
        return None
    brands = raw[8:12] + raw[16:min(len(raw), 64)]
    if b"avif" in brands or b"avis" in brands:
        return "AVIF"
    if any(b in brands for b in (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")):
        return "HEIC"
    return None


def bmff_truncated(raw: bytes) -> bool:
    """True when a top-level box of an ISO-BMFF file (HEIC, AVIF) runs past the end of the bytes.

    libheif decodes a cut-off HEIC without complaint, filling the missing tiles with
    garbage; a short box is how such a file shows itself before any pixel is read.
    """
    import struct

    pos = 0
    while pos + 8 <= len(raw):
        size, _ = struct.unpack(">I4s", raw[pos:pos + 8])
        if size == 1:
            if pos + 16 > len(raw):
                return True
            size = struct.unpack(">Q", raw[pos + 8:pos + 16])[0]
        elif size == 0:  # the last box runs to the end of the file
            return False
        if size < 8:
            return True  # a malformed box: nothing after it can be trusted
        if pos + size > len(raw):
            return True
        pos += size
    return pos != len(raw)


def _unrecognised(raw: bytes) -> DetectorError:
    """Why Pillow could not identify ``raw``: a cut-off or damaged HEIC/AVIF, a missing codec, or not an image."""
    family = is_heif_family(raw)
    if family and bmff_truncated(raw):
        return TruncatedImageError(f"The {family} file is truncated (it ends before its image data does). "
                                   "Re-export or re-download it.")
    if family == "HEIC" and HEIF_UNAVAILABLE:
        return UnsupportedImageError(f"This is a HEIC/HEIF photo, but this installation cannot read it: "
                                     f"{HEIF_UNAVAILABLE}")
    if family == "AVIF" and not AVIF_AVAILABLE:
        return UnsupportedImageError("This is an AVIF image, but this installation's Pillow has no AVIF codec.")
    if family:
        return UnsupportedImageError(f"The {family} file is damaged: its image data could not be read.")
    return UnsupportedImageError(f"Not a recognised image format (supported: {SUPPORTED_FORMATS}).")


def check_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Cheap pre-flight check (file readable, image magic and header, pixel limit) without decoding pixels.

    Lets a command refuse a bad file in milliseconds, before any model loads;
    raises the same errors :func:`decode_image` would for those faults.
    """
    raw = read_bytes(source)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        _open_header(raw, max_pixels).close()


def decode_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    exif_policy: str = "apply",
) -> DecodedImage:
    """Decode ``source`` into an upright RGB image.

    ``exif_policy`` is ``"apply"`` (rotate/flip as the EXIF orientation says)
    or ``"ignore"``; it comes from the checkpoint's preprocessing spec.
    """
    raw = read_bytes(source)
    sha = hashlib.sha256(raw).hexdigest() if raw else ""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = _open_header(raw, max_pixels)
        fmt = img.format
        n_frames = int(getattr(img, "n_frames", 1) or 1)
        try:
            if n_frames > 1:
                img.seek(0)
            orientation = None
            try:
                orientation = img.getexif().get(_EXIF_ORIENTATION_TAG)
            except Exception:
                orientation = None
            img.load()
            mode = img.mode
            if exif_policy == "apply" and orientation not in (None, 1):
                img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageTooLargeError("The image has too many pixels to decode safely.") from None
        except OSError as exc:
            text = str(exc).lower()
            if "truncated" in text or "broken data stream" in text or "premature end" in text:
                raise TruncatedImageError(
                    "The image file is truncated (it ends before the image data does). "
                    "Re-export or re-download it."
                ) from None
            raise ImageDecodeError(f"The image data could not be decoded ({exc}).") from None
        except (ValueError, SyntaxError, EOFError, MemoryError, RuntimeError) as exc:
            family = is_heif_family(raw)
            if family:
                raise ImageDecodeError(f"The {family} file is damaged: its image data could not be decoded "
                                       f"({exc}).") from None
            raise ImageDecodeError(f"The image data could not be decoded ({type(exc).__name__}).") from None
    if rgb is img and rgb.mode == "RGB":
        rgb = rgb.copy()  # detach from the file object
    return DecodedImage(
        image=rgb,
        sha256=sha,
        format=fmt,
        mode=mode,
        n_frames=n_frames,
        exif_orientation=int(orientation) if orientation is not None else None,
        file_size=len(raw),
        raw=raw,
    )

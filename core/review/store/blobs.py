"""Content-addressed image folder beside the database.

Originals live at ``originals/ab/<sha256>`` (the hash *is* the name, so the
same bytes are stored once and a file can be verified on read). In privacy
mode only a small JPEG thumbnail is kept, at ``thumbs/ab/<sha256>.jpg``.
Files are written to a temporary name, flushed to disk, then renamed, so a
crash never leaves a truncated file under a real name.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

from core.imageio import IMAGE_SUFFIXES, is_heif_family

#: Longest side of privacy-mode thumbnails, in pixels.
THUMBNAIL_SIZE = 256

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", ".jpg"),
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"GIF87a", ".gif"),
    (b"GIF89a", ".gif"),
    (b"BM", ".bmp"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
)


def sniff_ext(data: bytes, name: str = "") -> str:
    """File extension from the magic bytes, else from the name, else ``.bin``."""
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    family = is_heif_family(data)
    if family:
        return ".avif" if family == "AVIF" else ".heic"
    suffix = Path(name).suffix.lower()
    return suffix if suffix in IMAGE_SUFFIXES else ".bin"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a flushed temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def make_thumbnail(data: bytes) -> bytes | None:
    """A JPEG thumbnail through the project's safe decoder, or None if the bytes are not an image."""
    from core.errors import DetectorError
    from core.imageio import decode_image

    try:
        img = decode_image(data).image.copy()
    except DetectorError:
        return None
    img.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


class BlobStore:
    """The image folder; knows paths, never the database."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def original_path(self, sha256: str) -> Path:
        return self.root / "originals" / sha256[:2] / sha256

    def thumbnail_path(self, sha256: str) -> Path:
        return self.root / "thumbs" / sha256[:2] / f"{sha256}.jpg"

    def put_original(self, sha256: str, data: bytes) -> None:
        path = self.original_path(sha256)
        if not self._valid(path, sha256):
            write_atomic(path, data)

    def put_thumbnail(self, sha256: str, data: bytes) -> bool:
        path = self.thumbnail_path(sha256)
        if path.is_file():
            return True
        thumb = make_thumbnail(data)
        if thumb is None:
            return False
        write_atomic(path, thumb)
        return True

    def get_original(self, sha256: str) -> bytes | None:
        """The original bytes, or None when missing or not matching their hash."""
        path = self.original_path(sha256)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        return data if sha256_bytes(data) == sha256 else None

    def get_thumbnail(self, sha256: str) -> bytes | None:
        try:
            return self.thumbnail_path(sha256).read_bytes()
        except OSError:
            return None

    @staticmethod
    def _valid(path: Path, sha256: str) -> bool:
        try:
            return sha256_bytes(path.read_bytes()) == sha256
        except OSError:
            return False

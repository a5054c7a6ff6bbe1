"""Metadata evidence: camera EXIF, software tags, PNG generation parameters, XMP/C2PA hints.

Why: metadata often tells the story (a Stable Diffusion ``parameters`` chunk,
a C2PA manifest, ``trainedAlgorithmicMedia``), but it is trivially stripped
or forged, so it is reported as evidence and never decides a verdict alone.
C2PA bytes seen here are only a marker: the signed manifest itself is read and
verified by :mod:`core.scoring.guardrails.provenance`, whose account replaces
the marker's whenever the C2PA library is available.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

#: Names that, found in software tags, text chunks or XMP, point at an image generator.
GENERATOR_NAMES = ("stable diffusion", "stable-diffusion", "sdxl", "midjourney", "dall-e", "dall·e", "dalle",
                   "firefly", "comfyui", "automatic1111", "novelai", "invokeai", "leonardo.ai", "imagen",
                   "gemini", "flux", "ideogram", "runway", "openai", "gpt-4o", "dreamstudio", "nightcafe",
                   "trainedalgorithmicmedia", "compositewithtrainedalgorithmicmedia")
#: Editing software: evidence of processing, not of generation.
EDITOR_NAMES = ("photoshop", "gimp", "lightroom", "snapseed", "facetune", "picsart", "canva", "affinity",
                "pixelmator", "faceapp", "remini")
#: PNG text keys that generators write.
GENERATION_KEYS = ("parameters", "prompt", "workflow", "negative_prompt", "sd-metadata", "invokeai_metadata",
                   "dream", "generation_data", "aigc")
MAX_TEXT = 500

_EXIF_TAGS = {0x010F: "make", 0x0110: "model", 0x0131: "software", 0x0132: "datetime", 0x013B: "artist",
              0x010E: "description"}
_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003
_USER_COMMENT = 0x9286
#: Text that Stable Diffusion front-ends write into their parameters (PNG chunk or EXIF UserComment).
_SD_PARAMETER_MARKERS = ("steps:", "sampler:", "cfg scale:", "negative prompt:", "seed:")
#: How a generator hint read from raw C2PA bytes begins (unsigned reading; see ``defer_c2pa_to_library``).
_C2PA_HINT = "C2PA manifest declares"


@dataclass
class MetadataReport:
    exif: dict[str, str] = field(default_factory=dict)
    text_chunks: dict[str, str] = field(default_factory=dict)
    xmp_hints: list[str] = field(default_factory=list)
    c2pa: bool = False
    generator_hints: list[str] = field(default_factory=list)
    editor_hints: list[str] = field(default_factory=list)
    #: The C2PA library read this file (see the provenance report): the byte markers say nothing more.
    c2pa_verified_elsewhere: bool = False

    def defer_c2pa_to_library(self) -> None:
        """Drop the unsigned reading of C2PA bytes: the library's verified account takes its place."""
        self.c2pa_verified_elsewhere = True
        self.generator_hints = [h for h in self.generator_hints if not h.startswith(_C2PA_HINT)]

    @property
    def has_camera(self) -> bool:
        return bool(self.exif.get("make") or self.exif.get("model"))

    @property
    def capture_time(self) -> str | None:
        return self.exif.get("datetime_original") or self.exif.get("datetime")

    def evidence(self) -> list[str]:
        """Human-readable lines for the analyst."""
        lines = []
        if self.has_camera:
            cam = " ".join(v for v in (self.exif.get("make"), self.exif.get("model")) if v)
            when = self.exif.get("datetime_original") or self.exif.get("datetime")
            lines.append(f"EXIF names a camera: {cam}" + (f", taken {when}" if when else ""))
        for h in self.generator_hints:
            lines.append(f"Generator trace: {h}")
        for h in self.editor_hints:
            lines.append(f"Edited with: {h}")
        if self.c2pa and not self.c2pa_verified_elsewhere:
            lines.append("C2PA / Content Credentials manifest present (provenance claim; verify it)")
        if not (self.exif or self.text_chunks or self.xmp_hints):
            lines.append("No metadata (stripped or never written); absence proves nothing")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {"exif": self.exif, "text_chunks": self.text_chunks, "xmp_hints": self.xmp_hints, "c2pa": self.c2pa,
                "c2pa_verified_elsewhere": self.c2pa_verified_elsewhere, "generator_hints": self.generator_hints,
                "editor_hints": self.editor_hints,
                "camera": self.has_camera, "camera_make": self.exif.get("make"),
                "camera_model": self.exif.get("model"), "capture_time": self.capture_time,
                "software": self.exif.get("software"), "evidence": self.evidence()}


def _clean(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).replace("\x00", "").strip()
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


def _match(text: str, names: tuple[str, ...]) -> list[str]:
    """Names found as whole words ("flux" in "Flux.1" but not in "influx")."""
    low = text.lower()
    return [n for n in names if re.search(rf"(?<![a-z0-9]){re.escape(n)}(?![a-z0-9])", low)]


def metadata_bytes(raw: bytes, limit: int = 8_000_000) -> bytes:
    """The file's metadata segments only (JPEG APPn/COM before the scan, PNG chunks other than
    IDAT, WebP/RIFF chunks other than image data), so that searching them for markers such as
    ``c2pa`` cannot hit a coincidence in compressed pixel data. Other formats: the first 64 KiB."""
    raw = raw[:limit]
    parts: list[bytes] = []
    if raw[:2] == b"\xff\xd8":  # JPEG
        i = 2
        while i + 4 <= len(raw) and raw[i] == 0xFF:
            marker = raw[i + 1]
            if marker == 0xFF:
                i += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            if marker in (0xDA, 0xD9):  # start of scan / end: pixel data follows
                break
            size = int.from_bytes(raw[i + 2:i + 4], "big")
            if 0xE0 <= marker <= 0xEF or marker == 0xFE:
                parts.append(raw[i + 4:i + 2 + size])
            i += 2 + size
        return b"".join(parts)
    if raw[:8] == b"\x89PNG\r\n\x1a\n":
        i = 8
        while i + 8 <= len(raw):
            size = int.from_bytes(raw[i:i + 4], "big")
            kind = raw[i + 4:i + 8]
            if kind not in (b"IDAT", b"fdAT"):
                parts.append(kind + raw[i + 8:i + 8 + size])
            if kind == b"IEND":
                break
            i += 12 + size
        return b"".join(parts)
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        i = 12
        while i + 8 <= len(raw):
            kind = raw[i:i + 4]
            size = int.from_bytes(raw[i + 4:i + 8], "little")
            if kind not in (b"VP8 ", b"VP8L", b"ALPH", b"ANMF"):
                parts.append(kind + raw[i + 8:i + 8 + size])
            i += 8 + size + (size & 1)
        return b"".join(parts)
    return raw[:65536]


def _user_comment(value: Any) -> str:
    """EXIF UserComment: an 8-byte charset prefix, then the text (A1111 writes UTF-16 here)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, bytes):
        return str(value)
    head, body = value[:8], value[8:]
    if head.startswith(b"UNICODE"):
        for enc in ("utf-16-be", "utf-16-le"):
            try:
                text = body.decode(enc)
            except UnicodeDecodeError:
                continue
            if text and sum(c.isprintable() or c.isspace() for c in text) >= 0.9 * len(text):
                return text
    if head.startswith((b"ASCII", b"\x00\x00\x00\x00")):
        return body.decode("utf-8", "replace")
    return value.decode("utf-8", "replace")


def read_metadata(container: Image.Image, raw: bytes) -> MetadataReport:
    """Collect metadata from the opened file (``container``) and its raw bytes."""
    rep = MetadataReport()
    try:
        exif = container.getexif()
    except Exception:
        exif = {}
    for tag, name in _EXIF_TAGS.items():
        if exif and exif.get(tag):
            rep.exif[name] = _clean(exif.get(tag))
    try:
        sub = exif.get_ifd(_EXIF_IFD) if exif else {}
        if sub.get(_DATETIME_ORIGINAL):
            rep.exif["datetime_original"] = _clean(sub[_DATETIME_ORIGINAL])
        if sub.get(_USER_COMMENT):
            comment = _clean(_user_comment(sub[_USER_COMMENT]))
            if comment:
                rep.exif["user_comment"] = comment
    except Exception:
        pass
    for key, value in (container.info or {}).items():
        if isinstance(value, (str, bytes)) and key not in ("icc_profile", "exif", "xmp", "dpi", "transparency",
                                                          "photoshop", "adobe", "mp", "mpoffset"):
            if isinstance(value, bytes) and key not in GENERATION_KEYS + ("comment",):
                continue
            rep.text_chunks[str(key)] = _clean(value)
    meta_bytes = metadata_bytes(raw)
    xmp = container.info.get("xmp") or b""
    if not xmp:
        m = re.search(rb"<x:xmpmeta.*?</x:xmpmeta>", meta_bytes, re.S)
        xmp = m.group(0) if m else b""
    if xmp:
        xmp_text = _clean(xmp if isinstance(xmp, str) else xmp.decode("utf-8", "replace"))
        for tag in ("CreatorTool", "DigitalSourceType", "softwareAgent"):
            for m in re.finditer(rf"{tag}[=>\"']+([^<\"']+)", xmp_text):
                rep.xmp_hints.append(f"{tag}: {m.group(1).strip()}")
    rep.c2pa = b"c2pa" in meta_bytes or b"caBX" in meta_bytes
    if rep.c2pa:
        for name in ("trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"):
            if name.encode() in meta_bytes:
                rep.generator_hints.append(f"{_C2PA_HINT} '{name}'")
    # Generator and editor hints from every text source.
    sources = {f"EXIF {k} '{rep.exif[k][:60]}'": rep.exif[k] for k in ("software", "description", "artist")
               if rep.exif.get(k)}
    if rep.exif.get("user_comment"):
        sources["EXIF UserComment"] = rep.exif["user_comment"]
    for k, v in rep.text_chunks.items():
        sources[f"text chunk '{k}'"] = f"{k} {v}"
    for h in rep.xmp_hints:
        sources[f"XMP {h}"] = h
    for where, text in sources.items():
        for name in _match(text, GENERATOR_NAMES):
            rep.generator_hints.append(f"{where} mentions '{name}'")
        for name in _match(text, EDITOR_NAMES):
            rep.editor_hints.append(f"{where} mentions '{name}'")
    for key in rep.text_chunks:
        if key.lower() in GENERATION_KEYS:
            rep.generator_hints.append(f"PNG text chunk '{key}' holds generation parameters")
    comment = rep.exif.get("user_comment", "").lower()
    if sum(m in comment for m in _SD_PARAMETER_MARKERS) >= 2:
        rep.generator_hints.append("EXIF UserComment holds Stable Diffusion-style generation parameters")
    rep.generator_hints = list(dict.fromkeys(rep.generator_hints))
    rep.editor_hints = list(dict.fromkeys(rep.editor_hints))
    return rep

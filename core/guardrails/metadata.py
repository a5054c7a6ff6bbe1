"""Metadata evidence: camera EXIF, software tags, PNG generation parameters, XMP/C2PA hints.

Why: metadata often tells the story (a Stable Diffusion ``parameters`` chunk,
a C2PA manifest, ``trainedAlgorithmicMedia``), but it is trivially stripped
or forged, so it is reported as evidence and never decides a verdict alone.
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


@dataclass
class MetadataReport:
    exif: dict[str, str] = field(default_factory=dict)
    text_chunks: dict[str, str] = field(default_factory=dict)
    xmp_hints: list[str] = field(default_factory=list)
    c2pa: bool = False
    generator_hints: list[str] = field(default_factory=list)
    editor_hints: list[str] = field(default_factory=list)

    @property
    def has_camera(self) -> bool:
        return bool(self.exif.get("make") or self.exif.get("model"))

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
        if self.c2pa:
            lines.append("C2PA / Content Credentials manifest present (provenance claim; verify it)")
        if not (self.exif or self.text_chunks or self.xmp_hints):
            lines.append("No metadata (stripped or never written); absence proves nothing")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {"exif": self.exif, "text_chunks": self.text_chunks, "xmp_hints": self.xmp_hints, "c2pa": self.c2pa,
                "generator_hints": self.generator_hints, "editor_hints": self.editor_hints,
                "camera": self.has_camera, "evidence": self.evidence()}


def _clean(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).replace("\x00", "").strip()
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


def _match(text: str, names: tuple[str, ...]) -> list[str]:
    low = text.lower()
    return [n for n in names if n in low]


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
    except Exception:
        pass
    for key, value in (container.info or {}).items():
        if isinstance(value, (str, bytes)) and key not in ("icc_profile", "exif", "xmp", "dpi", "transparency"):
            if isinstance(value, bytes) and key not in GENERATION_KEYS:
                continue
            rep.text_chunks[str(key)] = _clean(value)
    xmp = container.info.get("xmp") or b""
    if not xmp:
        m = re.search(rb"<x:xmpmeta.*?</x:xmpmeta>", raw[:2_000_000], re.S)
        xmp = m.group(0) if m else b""
    if xmp:
        xmp_text = _clean(xmp if isinstance(xmp, str) else xmp.decode("utf-8", "replace"))
        for tag in ("CreatorTool", "DigitalSourceType", "softwareAgent"):
            for m in re.finditer(rf"{tag}[=>\"']+([^<\"']+)", xmp_text):
                rep.xmp_hints.append(f"{tag}: {m.group(1).strip()}")
    rep.c2pa = b"c2pa" in raw[:4_000_000] or b"jumb" in raw[:4_000_000]
    # Generator and editor hints from every text source.
    sources = {f"EXIF software '{rep.exif['software']}'": rep.exif["software"]} if rep.exif.get("software") else {}
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
    rep.generator_hints = list(dict.fromkeys(rep.generator_hints))
    rep.editor_hints = list(dict.fromkeys(rep.editor_hints))
    return rep

"""Dataset bias report: does something other than the image content separate the classes?

The paper's lesson: when real images are JPEGs and fakes are PNGs (or differ in
JPEG quality, size or metadata), a detector learns the container instead of
the generator. For each class this reports the distribution of file format,
JPEG quality (from the quantisation tables), resolution, aspect ratio and EXIF
presence, and measures how well each property alone separates real from fake:
total-variation distance for categories, |2·AUC − 1| for numbers (0 = no
signal, 1 = perfect shortcut). Anything at or above ``WARN_AT`` is a loud
warning.
"""
from __future__ import annotations

import io
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

from core.training.datasets import list_images
from core.scoring.guardrails.quality import estimate_jpeg_quality

#: Separation at which a property is reported as a shortcut the model could learn.
WARN_AT = 0.5
#: Separation worth mentioning.
NOTE_AT = 0.25
CLASS_NAMES = {0: "real", 1: "fake"}


@dataclass
class FileFacts:
    label: int
    format: str
    jpeg_quality: float | None
    width: int
    height: int
    has_exif: bool

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    @property
    def aspect(self) -> float:
        return self.width / max(1, self.height)


@dataclass
class PropertyReport:
    name: str
    kind: str  #: "categorical" or "numeric"
    per_class: dict[str, Any]
    separation: float
    level: str  #: "ok", "note" or "WARNING"
    detail: str = ""


@dataclass
class BiasReport:
    root: str
    counts: dict[str, int]
    properties: list[PropertyReport] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[PropertyReport]:
        return [p for p in self.properties if p.level == "WARNING"]

    def to_json(self) -> dict[str, Any]:
        return {"root": self.root, "counts": self.counts, "unreadable": self.unreadable,
                "properties": [p.__dict__ for p in self.properties],
                "warnings": [p.name for p in self.warnings]}


def file_facts(path: str | os.PathLike, label: int) -> FileFacts:
    data = open(path, "rb").read()
    with Image.open(io.BytesIO(data)) as img:
        fmt = img.format or "unknown"
        try:
            has_exif = len(img.getexif()) > 0
        except Exception:
            has_exif = False
        quality = estimate_jpeg_quality(img) if fmt == "JPEG" else None
        return FileFacts(label, fmt, quality, img.width, img.height, has_exif)


def _level(sep: float) -> str:
    return "WARNING" if sep >= WARN_AT else ("note" if sep >= NOTE_AT else "ok")


def _categorical(name: str, values: list[str], labels: np.ndarray) -> PropertyReport:
    per_class, dists = {}, []
    cats = sorted(set(values))
    for c in (0, 1):
        vals = [v for v, l in zip(values, labels) if l == c]
        cnt = Counter(vals)
        n = max(1, len(vals))
        per_class[CLASS_NAMES[c]] = {k: round(cnt.get(k, 0) / n, 3) for k in cats}
        dists.append(np.array([cnt.get(k, 0) / n for k in cats]))
    tv = float(0.5 * np.abs(dists[0] - dists[1]).sum()) if cats else 0.0
    return PropertyReport(name, "categorical", per_class, round(tv, 3), _level(tv),
                          "share of each value per class; separation = total-variation distance")


def _numeric(name: str, values: list[float | None], labels: np.ndarray) -> PropertyReport:
    per_class = {}
    arr = np.array([np.nan if v is None else float(v) for v in values])
    for c in (0, 1):
        v = arr[(labels == c) & ~np.isnan(arr)]
        per_class[CLASS_NAMES[c]] = ({"n": int(v.size), "min": round(float(v.min()), 3),
                                      "median": round(float(np.median(v)), 3), "max": round(float(v.max()), 3)}
                                     if v.size else {"n": 0})
    ok = ~np.isnan(arr)
    sep = 0.0
    if ok.sum() >= 4 and len(set(labels[ok])) == 2:
        sep = abs(2 * roc_auc_score(labels[ok], arr[ok]) - 1)
    return PropertyReport(name, "numeric", per_class, round(float(sep), 3), _level(sep),
                          "separation = |2*AUC - 1| of the value alone as a real/fake score")


def bias_report(root: str | os.PathLike) -> BiasReport:
    """Measure format/quality/size/EXIF differences between 0_real and 1_fake under ``root``."""
    facts, unreadable = [], []
    for it in list_images(root):
        try:
            facts.append(file_facts(it.path, it.label))
        except Exception as exc:
            unreadable.append(f"{it.path}: {type(exc).__name__}")
    labels = np.array([f.label for f in facts])
    report = BiasReport(root=str(root), counts={"real": int((labels == 0).sum()), "fake": int((labels == 1).sum())},
                        unreadable=unreadable)
    report.properties = [
        _categorical("file format", [f.format for f in facts], labels),
        _numeric("JPEG quality", [f.jpeg_quality for f in facts], labels),
        _numeric("megapixels", [f.megapixels for f in facts], labels),
        _numeric("width", [f.width for f in facts], labels),
        _numeric("height", [f.height for f in facts], labels),
        _numeric("aspect ratio", [f.aspect for f in facts], labels),
        _categorical("EXIF present", ["yes" if f.has_exif else "no" for f in facts], labels),
    ]
    return report


def format_report(report: BiasReport) -> str:
    lines = [f"Bias report for {report.root}: {report.counts['real']} real, {report.counts['fake']} fake"]
    for p in report.properties:
        flag = {"WARNING": "!!", "note": " ~", "ok": "  "}[p.level]
        lines.append(f"{flag} {p.name:14s} separation {p.separation:.2f} ({p.level})  "
                     f"real={p.per_class['real']}  fake={p.per_class['fake']}")
    for p in report.warnings:
        lines.append(f"!! WARNING: '{p.name}' alone separates the classes (separation {p.separation:.2f} >= {WARN_AT}). "
                     "A model can learn this shortcut instead of generation artefacts: rebalance or normalise it.")
    if report.unreadable:
        lines.append(f"{len(report.unreadable)} unreadable files skipped")
    return "\n".join(lines)

"""Labelled image folders in the WildRF layout.

``0_real`` / ``1_fake`` folders at any depth; the folder above each is the
image's *source* (``test/scenes-game/0_real/x.jpg`` → source ``scenes-game``).
A folder that directly holds ``0_real``/``1_fake`` at the root of ``DIR``
gets the source name of ``DIR`` itself. Used by training, calibration and
evaluation so all three see the same files in the same order.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from core.errors import DetectorError
from core.imageio import IMAGE_SUFFIXES

LABEL_DIRS = {"0_real": 0, "1_fake": 1}


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: int  #: 0 real, 1 fake
    source: str


def list_images(root: str | os.PathLike) -> list[LabelledImage]:
    """Every image under ``root`` that sits in a ``0_real`` or ``1_fake`` folder, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DetectorError(f"Data folder not found: {root}")
    items: list[LabelledImage] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        d = Path(dirpath)
        if d.name not in LABEL_DIRS:
            continue
        parent = d.parent
        source = parent.name if parent != root else (root.name or "data")
        for name in sorted(filenames):
            p = d / name
            if p.suffix.lower() in IMAGE_SUFFIXES and not name.startswith("."):
                items.append(LabelledImage(path=p, label=LABEL_DIRS[d.name], source=source))
    if not items:
        raise DetectorError(f"No images in 0_real/ or 1_fake/ folders under {root}")
    return items


def read_logit_csv(path: str | os.PathLike) -> tuple[list[float], list[int]]:
    """(logits, labels) from a CSV with ``logit`` and ``label`` columns (see :func:`logit_rows`)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise DetectorError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    return logit_rows(rows, str(path))


def logit_rows(rows: list[dict[str, str]], name: str) -> tuple[list[float], list[int]]:
    """(logits, labels) from CSV rows with ``logit`` and ``label`` columns.

    Labels may be 0/1 or ``real``/``fake``; rows labelled anything else (``unsure``)
    are skipped, since they carry no ground truth. A logit that is not a number is refused.
    """
    if rows and not {"logit", "label"} <= set(rows[0]):
        raise DetectorError(f"{name} needs 'logit' and 'label' columns.")
    if not rows:
        raise DetectorError(f"{name} has no rows (it needs 'logit' and 'label' columns).")
    logits, labels = [], []
    for number, row in enumerate(rows, start=2):
        lab = str(row.get("label") or "").strip().lower()
        value = {"0": 0, "1": 1, "real": 0, "fake": 1}.get(lab)
        if value is None or row.get("logit") in ("", None):
            continue
        try:
            logit = float(row["logit"])
        except ValueError:
            raise DetectorError(f"{name}, line {number}: logit {row['logit']!r} is not a number.") from None
        if logit != logit or logit in (float("inf"), float("-inf")):
            raise DetectorError(f"{name}, line {number}: logit {row['logit']!r} is not a finite number.")
        logits.append(logit)
        labels.append(value)
    return logits, labels

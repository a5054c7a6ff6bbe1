"""Writing an exported batch to files, outside the database layer.

* ``<id>-recalibration.csv`` / ``.jsonl`` — one row per labelled item with the
  scoring used (latest, or latest by ``model_sha256``); the CSV is what
  ``core calibrate`` reads (``unsure`` and unscored rows carry no usable ground
  truth and are skipped there). Columns: :data:`RECALIBRATION_COLUMNS`.
* ``<id>-hard-negatives.zip`` — items whose label contradicts the model, in the
  WildRF layout (``0_real/``, ``1_fake/``, original bytes named
  ``<sha256><ext>``) plus ``manifest.csv``; unzipped it is a ``core train
  --data`` folder. In privacy mode only thumbnails exist: those are exported
  and the manifest's ``content`` column says ``thumbnail``.
* optionally a SQLite file (``items``, ``scorings``, ``labels``) written with
  sqlite-utils, to open in Datasette or hand to another team.

CSV cells of free text (file names, notes, reviewer names) that a spreadsheet
would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, tab or
carriage return) get a leading ``'``, as OWASP advises; JSONL and SQLite keep
the text as typed. Files are written under temporary names and renamed only
once complete; only then does the store record the export. Content is
deterministic: the same batch yields byte-identical CSV, JSONL and zip files.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
import zipfile
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from core.review.store.base import StoreError
from core.review.store.exports import (LABEL_DIRS, MANIFEST_COLUMNS, RECALIBRATION_COLUMNS, counts,
                                       is_hard_negative, new_export_id)

if TYPE_CHECKING:
    from core.review.store import ReviewStore

#: Called as ``progress(done, total)`` after each exported item.
Progress = Callable[[int, int], None]
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
#: Columns holding text people typed or files were named with (neutralised in CSV).
FREE_TEXT = frozenset({"name", "note", "reviewer", "original_name"})
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_text(value: str) -> str:
    """A cell a spreadsheet shows as text, never runs (OWASP CSV-injection advice)."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _cell(value: Any, column: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return safe_text(str(value)) if column in FREE_TEXT else str(value)


def _file_info(path: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return {"path": str(path), "sha256": h.hexdigest(), "bytes": path.stat().st_size}


class _AtomicFile:
    """A temporary file beside ``final``; :meth:`commit` flushes it to disk and renames it."""

    def __init__(self, final: Path) -> None:
        self.final = final
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        self.tmp = Path(tmp)

    def commit(self) -> None:
        with open(self.tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.final)

    def discard(self) -> None:
        if self.tmp.exists():
            self.tmp.unlink()


def write_export(store: "ReviewStore", rows: list[dict[str, Any]], out_dir: str | os.PathLike,
                 filters: dict[str, Any], *, include_all_reviewed: bool, exported_by: str | None,
                 progress: Progress | None = None, repeat_of: str | None = None,
                 sqlite: str | os.PathLike | None = None) -> dict[str, Any]:
    """Write the files for ``rows`` (from the store's selection queries), then record the export."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise StoreError(f"Export destination is a file, not a folder: {out}")
    out.mkdir(parents=True, exist_ok=True)
    export_id = new_export_id(store.now())
    finals = {"csv": out / f"{export_id}-recalibration.csv",
              "jsonl": out / f"{export_id}-recalibration.jsonl",
              "zip": out / f"{export_id}-hard-negatives.zip"}
    if sqlite is not None:
        finals["sqlite"] = Path(sqlite)
        if finals["sqlite"].is_dir():
            raise StoreError(f"--sqlite needs a file name, not a folder: {finals['sqlite']}")
        finals["sqlite"].parent.mkdir(parents=True, exist_ok=True)
    tally = counts(rows, include_all_reviewed)
    in_zip = {id(r) for r in (rows if include_all_reviewed else [r for r in rows if is_hard_negative(r)])
              if r["label"] in LABEL_DIRS}
    with ExitStack() as stack:
        tmps = {k: _AtomicFile(p) for k, p in finals.items()}
        stack.callback(lambda: [t.discard() for t in tmps.values()])
        images = _write_files(store, rows, in_zip, tmps, progress)
        if sqlite is not None:
            write_sqlite_batch(rows, tmps["sqlite"].tmp)
        for t in tmps.values():
            t.commit()
    tally.update(images)
    files = {k: _file_info(p) for k, p in finals.items()}
    store.exports.record(export_id, rows, filters=filters, counts=tally, files=files, exported_by=exported_by,
                         repeat_of=repeat_of)
    result = {"export_id": export_id, "csv": files["csv"]["path"], "jsonl": files["jsonl"]["path"],
              "zip": files["zip"]["path"], "counts": tally, "files": files, "filters": filters,
              "repeat_of": repeat_of}
    if sqlite is not None:
        result["sqlite"] = files["sqlite"]["path"]
    return result


def _write_files(store: "ReviewStore", rows: list[dict[str, Any]], in_zip: set[int], tmps: dict[str, _AtomicFile],
                 progress: Progress | None) -> dict[str, int]:
    images = {"zip_images": 0, "thumbnails": 0, "missing_images": 0}
    manifest: list[dict[str, Any]] = []
    with open(tmps["csv"].tmp, "w", newline="", encoding="utf-8") as csv_fh, \
            open(tmps["jsonl"].tmp, "w", encoding="utf-8") as jsonl_fh, \
            zipfile.ZipFile(tmps["zip"].tmp, "w") as zf:
        writer = csv.writer(csv_fh)
        writer.writerow(RECALIBRATION_COLUMNS)
        for done, row in enumerate(rows, 1):
            writer.writerow([_cell(row[c], c) for c in RECALIBRATION_COLUMNS])
            jsonl_fh.write(json.dumps({c: row[c] for c in RECALIBRATION_COLUMNS}) + "\n")
            if id(row) in in_zip:
                manifest.append(_zip_image(store, zf, row, images))
            if progress is not None:
                progress(done, len(rows))
        buf = io.StringIO()
        mw = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        mw.writeheader()
        for entry in sorted(manifest, key=lambda m: (m["label"], m["sha256"])):
            mw.writerow({k: _cell(v, k) for k, v in entry.items()})
        _zip_write(zf, "manifest.csv", buf.getvalue().encode("utf-8"), zipfile.ZIP_DEFLATED)
    return images


def _zip_image(store: "ReviewStore", zf: zipfile.ZipFile, row: dict[str, Any], images: dict[str, int]) -> dict:
    sha = row["sha256"]
    data, ext, content = None, row["ext"], "missing"
    if row["storage"] == "original":
        data = store.blobs.get_original(sha)
        content = "original" if data is not None else "missing"
    elif row["storage"] == "thumbnail":
        data, ext = store.blobs.get_thumbnail(sha), ".jpg"
        content = "thumbnail" if data is not None else "missing"
    path = ""
    if data is not None:
        path = f"{LABEL_DIRS[row['label']]}/{sha}{ext}"
        _zip_write(zf, path, data, zipfile.ZIP_STORED)
        images["zip_images"] += 1
        images["thumbnails"] += content == "thumbnail"
    else:
        images["missing_images"] += 1
    return {"path": path, "sha256": sha, "label": row["label"], "original_name": row["name"],
            "logit": row["logit"], "probability": row["probability"], "tier": row["tier"],
            "model_sha256": row["model_sha256"], "reviewer": row["reviewer"],
            "labelled_at": row["labelled_at"], "content": content}


def _zip_write(zf: zipfile.ZipFile, name: str, data: bytes, compress: int) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = compress
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def write_sqlite_batch(rows: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """The batch as a small SQLite file: ``items``, ``scorings`` (the one used) and ``labels``, linked by keys.

    Made with sqlite-utils so it opens as is in Datasette (``datasette FILE``).
    """
    import sqlite_utils

    path = Path(path)
    if path.exists():
        path.unlink()  # the temporary file mkstemp made: start from an empty database
    db = sqlite_utils.Database(path)
    db["items"].create({"sha256": str, "name": str, "ext": str, "size": int, "storage": str, "uploaded_at": str},
                       pk="sha256")
    scoring_cols = {"id": int, "sha256": str, "scored_at": str, "model_sha256": str, "model_label": str,
                    "preprocess_fingerprint": str, "calibration_version": str, "logit": float, "probability": float,
                    "tier": str, "precision": str, "provenance": str, "provenance_signer": str,
                    "provenance_issuer": str, "provenance_trusted": int}
    db["scorings"].create(scoring_cols, pk="id", foreign_keys=[("sha256", "items", "sha256")])
    label_cols = {"label_event_id": int, "sha256": str, "label": str, "reviewer": str, "labelled_at": str,
                  "note": str, "seconds_spent": float, "authenticated": int, "scoring_id": int}
    db["labels"].create(label_cols, pk="label_event_id",
                        foreign_keys=[("sha256", "items", "sha256"), ("scoring_id", "scorings", "id")])
    db["items"].insert_all(({c: r[c] for c in ("sha256", "name", "ext", "size", "storage", "uploaded_at")}
                            for r in rows), replace=True)
    db["scorings"].insert_all(({"id": r["scoring_id"], **{c: r[c] for c in scoring_cols if c != "id"}}
                               for r in rows if r["scoring_id"] is not None), replace=True)
    db["labels"].insert_all(({c: r[c] for c in label_cols} for r in rows), replace=True)
    db.conn.commit()
    db.close()

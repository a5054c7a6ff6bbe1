"""Exports of labelled batches: recalibration data and hard negatives.

* ``<id>-recalibration.csv`` / ``.jsonl`` — one row per labelled item with the
  latest scoring (or the latest by ``model_sha256``); the CSV is what
  ``core calibrate`` reads (``unsure`` rows and unscored rows carry no usable
  ground truth and are skipped there).
* ``<id>-hard-negatives.zip`` — items whose label contradicts the model, in the
  WildRF layout (``0_real/``, ``1_fake/``, original bytes named
  ``<sha256><ext>``) plus ``manifest.csv``; unzipped it is a ``core train
  --data`` folder. In privacy mode only thumbnails exist: those are exported
  and the manifest's ``content`` column says ``thumbnail``.

Files are written under temporary names and renamed only once complete, then
the export (filters, file hashes, who, when, which label events) is recorded.
A process killed mid-export leaves no file under a final name and no record,
so the same items count as not yet exported. Content is deterministic: the
same batch (see :meth:`repeat_export`) yields byte-identical files.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import secrets
import tempfile
import zipfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Mapping

from core.review.store.base import StoreError
from core.review.store.labels import LabelFilters, LabelsMixin

RECALIBRATION_COLUMNS = ("sha256", "logit", "probability", "label", "reviewer", "labelled_at", "model_sha256",
                         "calibration_version", "preprocess_fingerprint")
MANIFEST_COLUMNS = ("path", "sha256", "label", "original_name", "logit", "probability", "tier", "model_sha256",
                    "reviewer", "labelled_at", "content")
LABEL_DIRS = {"real": "0_real", "fake": "1_fake"}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)

#: Called as ``progress(done, total)`` after each exported item.
Progress = Callable[[int, int], None]


def model_verdict(tier: str | None, probability: float | None) -> str | None:
    """What the model said: its tier, with review-tier items split at p = 0.5."""
    if tier == "fake" or (tier == "review" and probability is not None and probability >= 0.5):
        return "fake"
    if tier == "real" or (tier == "review" and probability is not None):
        return "real"
    return None


def is_hard_negative(row: Mapping[str, Any]) -> bool:
    """A real/fake label that contradicts the model's verdict on the scoring used."""
    verdict = model_verdict(row.get("tier"), row.get("probability"))
    return row.get("label") in LABEL_DIRS and verdict is not None and verdict != row["label"]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


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


class ExportsMixin(LabelsMixin):

    def export_batch(self, out_dir: str | os.PathLike, *, since: Any = None, until: Any = None,
                     reviewer: str | None = None, label: str | None = None, model_sha256: str | None = None,
                     only_new: bool = True, include_all_reviewed: bool = False, exported_by: str | None = None,
                     progress: Progress | None = None) -> dict[str, Any]:
        """Write the recalibration CSV/JSONL and the hard-negative zip for the matching labelled items.

        ``include_all_reviewed`` puts every real/fake-labelled item in the zip, not
        only the hard negatives. Returns paths, counts, file hashes and the export id.
        """
        filters = LabelFilters.make(since=since, until=until, reviewer=reviewer, label=label,
                                    model_sha256=model_sha256, only_new=only_new)
        sql, params = filters.sql()
        with self._read():
            rows = self._rows(sql, tuple(params))
        recorded = {**filters.to_dict(), "include_all_reviewed": bool(include_all_reviewed)}
        return self._export(rows, out_dir, recorded, include_all_reviewed=include_all_reviewed,
                            exported_by=exported_by, progress=progress)

    def repeat_export(self, export_id: str, out_dir: str | os.PathLike, *, exported_by: str | None = None,
                      progress: Progress | None = None) -> dict[str, Any]:
        """Write the very same batch again (same label events and scorings), recorded as a new export."""
        with self._read():
            original = self._row("SELECT * FROM exports WHERE id = ?", (export_id,))
            if original is None:
                raise StoreError(f"No export with id {export_id!r}.")
            rows = self._rows(
                "SELECT x.sha256, x.label_event_id, e.label, e.reviewer, e.created_at AS labelled_at, e.note, "
                "e.seconds_spent, i.name, i.ext, i.storage, s.id AS scoring_id, s.logit, s.probability, s.tier, "
                "s.model_sha256, s.model_label, s.calibration_version, s.preprocess_fingerprint "
                "FROM export_items x JOIN label_events e ON e.id = x.label_event_id "
                "JOIN items i ON i.sha256 = x.sha256 LEFT JOIN scorings s ON s.id = x.scoring_id "
                "WHERE x.export_id = ? ORDER BY e.created_at, x.sha256", (export_id,))
        filters = json.loads(original["filters"])
        return self._export(rows, out_dir, filters, include_all_reviewed=bool(filters.get("include_all_reviewed")),
                            exported_by=exported_by, progress=progress, repeat_of=export_id)

    def export_preview(self, filters: Mapping[str, Any] | None = None, *, hard_negative_limit: int = 500,
                       **kwargs: Any) -> dict[str, Any]:
        """Counts and the hard-negative list an export with these filters would produce (writes nothing).

        Filters as for :meth:`export_batch`; ``only_new`` defaults to True there and here.
        """
        raw = {"only_new": True, **dict(filters or {}), **kwargs}
        include_all = bool(raw.pop("include_all_reviewed", False))
        parsed = LabelFilters.make(raw)
        sql, params = parsed.sql()
        with self._read():
            rows = self._rows(sql, tuple(params))
        hard = [r for r in rows if is_hard_negative(r)]
        counts = self._counts(rows, hard, include_all)
        return {"filters": {**parsed.to_dict(), "include_all_reviewed": include_all}, "counts": counts,
                "hard_negatives": hard[:hard_negative_limit]}

    def export_history(self, limit: int = 50) -> list[dict[str, Any]]:
        """Recorded exports, newest first, with filters, counts and file hashes."""
        with self._read():
            rows = self._rows("SELECT * FROM exports ORDER BY created_at DESC, id DESC LIMIT ?", (int(limit),))
        for row in rows:
            for key in ("filters", "counts", "files"):
                row[key] = json.loads(row[key])
        return rows

    # -- internals -------------------------------------------------------
    @staticmethod
    def _counts(rows: list[dict[str, Any]], hard: list[dict[str, Any]], include_all: bool) -> dict[str, int]:
        counts = {"items": len(rows), "real": 0, "fake": 0, "unsure": 0, "unscored": 0,
                  "hard_negatives": len(hard)}
        for r in rows:
            counts[r["label"]] += 1
            counts["unscored"] += r["scoring_id"] is None
        counts["zip_items"] = (counts["real"] + counts["fake"]) if include_all else len(hard)
        return counts

    def _export(self, rows: list[dict[str, Any]], out_dir: str | os.PathLike, filters: dict[str, Any], *,
                include_all_reviewed: bool, exported_by: str | None, progress: Progress | None,
                repeat_of: str | None = None) -> dict[str, Any]:
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise StoreError(f"Export destination is a file, not a folder: {out}")
        out.mkdir(parents=True, exist_ok=True)
        now = self.now()
        export_id = f"exp-{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"
        finals = {"csv": out / f"{export_id}-recalibration.csv",
                  "jsonl": out / f"{export_id}-recalibration.jsonl",
                  "zip": out / f"{export_id}-hard-negatives.zip"}
        hard = [r for r in rows if is_hard_negative(r)]
        counts = self._counts(rows, hard, include_all_reviewed)
        in_zip = {id(r) for r in (rows if include_all_reviewed else hard) if r["label"] in LABEL_DIRS}
        with ExitStack() as stack:
            tmps = {k: _AtomicFile(p) for k, p in finals.items()}
            stack.callback(lambda: [t.discard() for t in tmps.values()])
            image_counts = self._write_files(rows, in_zip, tmps, progress)
            for t in tmps.values():
                t.commit()
        counts.update(image_counts)
        files = {k: _file_info(p) for k, p in finals.items()}
        with self._write() as conn:
            conn.execute("INSERT INTO exports (id, created_at, exported_by, filters, counts, files, repeat_of) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (export_id, self.now_iso(), exported_by, json.dumps(filters, sort_keys=True),
                          json.dumps(counts, sort_keys=True), json.dumps(files, sort_keys=True), repeat_of))
            conn.executemany("INSERT INTO export_items (export_id, label_event_id, scoring_id, sha256) "
                             "VALUES (?, ?, ?, ?)",
                             [(export_id, r["label_event_id"], r["scoring_id"], r["sha256"]) for r in rows])
        return {"export_id": export_id, "csv": files["csv"]["path"], "jsonl": files["jsonl"]["path"],
                "zip": files["zip"]["path"], "counts": counts, "files": files, "filters": filters,
                "repeat_of": repeat_of}

    def _write_files(self, rows: list[dict[str, Any]], in_zip: set[int], tmps: dict[str, _AtomicFile],
                     progress: Progress | None) -> dict[str, int]:
        images = {"zip_images": 0, "thumbnails": 0, "missing_images": 0}
        manifest: list[dict[str, Any]] = []
        with open(tmps["csv"].tmp, "w", newline="", encoding="utf-8") as csv_fh, \
                open(tmps["jsonl"].tmp, "w", encoding="utf-8") as jsonl_fh, \
                zipfile.ZipFile(tmps["zip"].tmp, "w") as zf:
            writer = csv.writer(csv_fh)
            writer.writerow(RECALIBRATION_COLUMNS)
            for done, row in enumerate(rows, 1):
                writer.writerow([_cell(row[c]) for c in RECALIBRATION_COLUMNS])
                jsonl_fh.write(json.dumps({c: row[c] for c in RECALIBRATION_COLUMNS}) + "\n")
                if id(row) in in_zip:
                    manifest.append(self._zip_image(zf, row, images))
                if progress is not None:
                    progress(done, len(rows))
            buf = io.StringIO()
            mw = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
            mw.writeheader()
            for entry in sorted(manifest, key=lambda m: (m["label"], m["sha256"])):
                mw.writerow({k: _cell(v) for k, v in entry.items()})
            self._zip_write(zf, "manifest.csv", buf.getvalue().encode("utf-8"), zipfile.ZIP_DEFLATED)
        return images

    def _zip_image(self, zf: zipfile.ZipFile, row: dict[str, Any], images: dict[str, int]) -> dict[str, Any]:
        sha = row["sha256"]
        data, ext, content = None, row["ext"], "missing"
        if row["storage"] == "original":
            data = self.blobs.get_original(sha)
            content = "original" if data is not None else "missing"
        elif row["storage"] == "thumbnail":
            data, ext = self.blobs.get_thumbnail(sha), ".jpg"
            content = "thumbnail" if data is not None else "missing"
        path = ""
        if data is not None:
            path = f"{LABEL_DIRS[row['label']]}/{sha}{ext}"
            self._zip_write(zf, path, data, zipfile.ZIP_STORED)
            images["zip_images"] += 1
            images["thumbnails"] += content == "thumbnail"
        else:
            images["missing_images"] += 1
        return {"path": path, "sha256": sha, "label": row["label"], "original_name": row["name"],
                "logit": row["logit"], "probability": row["probability"], "tier": row["tier"],
                "model_sha256": row["model_sha256"], "reviewer": row["reviewer"],
                "labelled_at": row["labelled_at"], "content": content}

    @staticmethod
    def _zip_write(zf: zipfile.ZipFile, name: str, data: bytes, compress: int) -> None:
        info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
        info.compress_type = compress
        info.external_attr = 0o644 << 16
        zf.writestr(info, data)

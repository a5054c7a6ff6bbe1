"""Owner of ``items``, ``uploads`` and ``scorings``: the only SQL that touches them.

Items are keyed by the SHA-256 of their bytes: the same bytes uploaded twice
stay one item with two upload rows and, once scored twice, two scorings.
Every scoring is kept: it is the score log that monitoring and exports read.
The bytes themselves live in the content-addressed :class:`BlobStore`.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import sqlalchemy as sa

from core.review.store.base import TIERS, StoreError
from core.review.store.blobs import BlobStore, sha256_bytes, sniff_ext
from core.review.store.db import Database
from core.review.store.tables import items, scorings, uploads

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
#: Longest original file name kept (longer names are cut, never refused).
MAX_NAME = 255


def check_sha256(value: str) -> str:
    """Lower-case a SHA-256 hex digest and refuse anything else with a readable message."""
    sha = str(value or "").strip().lower()
    if not _SHA_RE.match(sha):
        raise StoreError(f"Not a SHA-256 hex digest: {value!r} (expected 64 hexadecimal characters).")
    return sha


def _jsonable(value: Any) -> Any:
    """Plain JSON: numpy scalars to Python, non-finite floats to None, unknowns to str."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    return str(value)


def _dump(value: Any) -> str:
    return json.dumps(_jsonable(value), sort_keys=True, allow_nan=False)


def scoring_kwargs(result_json: Mapping[str, Any]) -> dict[str, Any]:
    """The model/score fields of ``ScoreResult.to_json()`` as :meth:`record_scoring` keywords.

    Tier, reasons and guardrails come from the policy layer and are passed separately.
    """
    return {
        "model_sha256": result_json.get("model_sha256"),
        "model_label": result_json.get("model"),
        "preprocess_fingerprint": result_json.get("preprocess_fingerprint"),
        "calibration_version": result_json.get("calibration_version"),
        "logit": result_json["logit"],
        "probability": result_json["probability"],
        "timings": dict(result_json.get("timings_ms") or {}),
        "precision": result_json.get("precision"),
    }


def _scoring_out(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    row = dict(row)
    for key in ("reasons", "guardrails", "timings"):
        row[key] = json.loads(row[key]) if row.get(key) else ([] if key == "reasons" else {})
    return row


def latest_scoring_id(sha256_column: sa.ColumnElement, model_sha256: str | None = None) -> sa.ScalarSelect:
    """Correlated subquery: id of the item's latest scoring (by ``model_sha256`` when given).

    Written once for every join that shows "the scoring in force" (lists, exports).
    """
    q = sa.select(sa.func.max(scorings.c.id)).where(scorings.c.sha256 == sha256_column)
    if model_sha256:
        q = q.where(scorings.c.model_sha256 == model_sha256)
    return q.correlate_except(scorings).scalar_subquery()


def clean_name(name: str | None) -> str:
    """The file name without folders, cut to :data:`MAX_NAME` characters (never refused)."""
    return Path(str(name or "upload").replace("\\", "/")).name.strip()[:MAX_NAME] or "upload"


class ItemsOwner:
    """Items, their uploads and their scorings on one :class:`Database`."""

    def __init__(self, db: Database, blobs: BlobStore, privacy_mode: bool) -> None:
        self.db, self.blobs, self.privacy_mode = db, blobs, privacy_mode

    # -- writes ----------------------------------------------------------
    def add(self, data: bytes, *, name: str, uploader: str | None = None, sha256: str | None = None) -> str:
        """Store the bytes (or only a thumbnail in privacy mode) and return their SHA-256.

        Idempotent by hash: a repeat upload adds an upload row, never a second item. ``sha256`` is the
        caller's digest of these very bytes (an upload is hashed once, when it is decoded).
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise StoreError("add_item needs the file's bytes.")
        data = bytes(data)
        if not data:
            raise StoreError(f"{name or 'The upload'} is empty (0 bytes); nothing was stored.")
        name = clean_name(name)
        uploader = (uploader or "").strip() or None
        sha = check_sha256(sha256) if sha256 is not None else sha256_bytes(data)
        # Bytes go to disk before the row that points at them (an orphan file is harmless).
        if self.privacy_mode:
            storage = "thumbnail" if self.blobs.put_thumbnail(sha, data) else "none"
        else:
            self.blobs.put_original(sha, data)
            storage = "original"
        with self.db.write():
            now = self.db.now_iso()
            self.db.lock(f"item:{sha}")  # PostgreSQL: two first uploads of the same bytes make one item
            existing = self.db.scalar(sa.select(items.c.storage).where(items.c.sha256 == sha))
            if existing is None:
                self.db.execute(items.insert().values(
                    sha256=sha, name=name, size=len(data), ext=sniff_ext(data, name), storage=storage,
                    uploaded_at=now, uploader=uploader, last_seen_at=now))
            else:
                values: dict[str, Any] = {"last_seen_at": now}
                if existing != "original" and storage == "original":
                    values["storage"] = "original"
                self.db.execute(items.update().where(items.c.sha256 == sha).values(**values))
            self.db.execute(uploads.insert().values(sha256=sha, name=name, uploader=uploader, uploaded_at=now))
        return sha

    def add_scoring(self, sha256: str, *, model_sha256: str | None, model_label: str | None = None,
                    preprocess_fingerprint: str | None = None, calibration_version: str | None = None,
                    logit: float, probability: float, tier: str, reasons: Sequence[str] = (),
                    guardrails: Mapping[str, Any] | None = None, timings: Mapping[str, Any] | None = None,
                    precision: str | None = None) -> int:
        """Append one scoring of a stored item (inside the caller's transaction); returns its id."""
        sha = check_sha256(sha256)
        if tier not in TIERS:
            raise StoreError(f"Unknown tier {tier!r}; expected one of {', '.join(TIERS)}.")
        try:
            logit_f, prob_f = float(logit), float(probability)
        except (TypeError, ValueError):
            raise StoreError("logit and probability must be numbers.") from None
        if not math.isfinite(logit_f):
            raise StoreError(f"logit must be a finite number, got {logit!r}.")
        if not (math.isfinite(prob_f) and 0.0 <= prob_f <= 1.0):
            raise StoreError(f"probability must be within [0, 1], got {probability!r}.")
        if isinstance(reasons, str):
            reasons = [reasons]
        precision = (str(precision).strip() or None) if precision is not None else None
        self.need(sha)
        return int(self.db.scalar(scorings.insert().values(
            sha256=sha, scored_at=self.db.now_iso(), model_sha256=model_sha256, model_label=model_label,
            preprocess_fingerprint=preprocess_fingerprint, calibration_version=calibration_version,
            logit=logit_f, probability=prob_f, tier=tier, reasons=_dump([str(r) for r in reasons]),
            guardrails=_dump(dict(guardrails or {})), timings=_dump(dict(timings or {})), precision=precision,
        ).returning(scorings.c.id)))

    # -- reads -----------------------------------------------------------
    def get(self, sha: str) -> dict[str, Any] | None:
        return self.db.row(sa.select(items).where(items.c.sha256 == sha))

    def need(self, sha: str) -> dict[str, Any]:
        row = self.get(sha)
        if row is None:
            raise StoreError(f"No stored item with SHA-256 {sha[:12]}…; upload it first.")
        return row

    def uploads(self, sha: str) -> list[dict[str, Any]]:
        return self.db.rows(sa.select(uploads.c.name, uploads.c.uploader, uploads.c.uploaded_at)
                            .where(uploads.c.sha256 == sha).order_by(uploads.c.id))

    def scorings(self, sha: str) -> list[dict[str, Any]]:
        return [_scoring_out(r) for r in
                self.db.rows(sa.select(scorings).where(scorings.c.sha256 == sha).order_by(scorings.c.id))]

    def has_scoring(self, sha: str, model_sha256: str) -> bool:
        """True when this model file has already scored this item."""
        return self.db.scalar(sa.select(scorings.c.id).where(scorings.c.sha256 == sha,
                                                             scorings.c.model_sha256 == model_sha256).limit(1)) \
            is not None

    def latest_scoring(self, sha: str) -> dict[str, Any] | None:
        """The item's latest scoring with reasons/guardrails/timings parsed from JSON."""
        return _scoring_out(self.db.row(sa.select(scorings).where(scorings.c.sha256 == sha)
                                        .order_by(scorings.c.id.desc()).limit(1)))

    def seen_since(self, since: str, limit: int) -> list[str]:
        """Items uploaded (first or again) at or after ``since``, latest first."""
        return [r["sha256"] for r in self.db.rows(sa.select(items.c.sha256).where(items.c.last_seen_at >= since)
                                                  .order_by(items.c.last_seen_at.desc()).limit(int(limit)))]

    def image_bytes(self, sha: str) -> bytes | None:
        """The original bytes; in privacy mode (``storage == 'thumbnail'``) the thumbnail; else None."""
        storage = self.db.scalar(sa.select(items.c.storage).where(items.c.sha256 == sha))
        if storage == "original":
            return self.blobs.get_original(sha)
        if storage == "thumbnail":
            return self.blobs.get_thumbnail(sha)
        return None

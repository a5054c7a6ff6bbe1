"""Items (keyed by the SHA-256 of their bytes), their uploads and their scorings.

The same bytes uploaded twice stay one item with two upload rows and, once
scored twice, two scorings. Every scoring is kept: it is the score log that
monitoring and exports read.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from core.review.store.base import TIERS, StoreBase, StoreError
from core.review.store.blobs import BlobStore, sha256_bytes, sniff_ext

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
    }


def _scoring_out(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    row = dict(row)
    for key in ("reasons", "guardrails", "timings"):
        row[key] = json.loads(row[key]) if row.get(key) else ([] if key == "reasons" else {})
    return row


_LATEST_SCORING_SQL = "SELECT * FROM scorings WHERE sha256 = ? ORDER BY id DESC LIMIT 1"


class ItemsMixin(StoreBase):
    blobs: BlobStore
    privacy_mode: bool

    # -- writes ----------------------------------------------------------
    def add_item(self, data: bytes, *, name: str, uploader: str | None = None) -> str:
        """Store the bytes (or only a thumbnail in privacy mode) and return their SHA-256.

        Idempotent by hash: a repeat upload adds an upload row, never a second item.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise StoreError("add_item needs the file's bytes.")
        data = bytes(data)
        if not data:
            raise StoreError(f"{name or 'The upload'} is empty (0 bytes); nothing was stored.")
        clean_name = Path(str(name or "upload").replace("\\", "/")).name.strip()[:MAX_NAME] or "upload"
        uploader = (uploader or "").strip() or None
        sha = sha256_bytes(data)
        # Bytes go to disk before the row that points at them (an orphan file is harmless).
        if self.privacy_mode:
            storage = "thumbnail" if self.blobs.put_thumbnail(sha, data) else "none"
        else:
            self.blobs.put_original(sha, data)
            storage = "original"
        now = self.now_iso()
        with self._write() as conn:
            existing = conn.execute("SELECT storage FROM items WHERE sha256 = ?", (sha,)).fetchone()
            if existing is None:
                conn.execute(
                    "INSERT INTO items (sha256, name, size, ext, storage, uploaded_at, uploader, last_seen_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (sha, clean_name, len(data), sniff_ext(data, clean_name), storage, now, uploader, now),
                )
            else:
                upgrade = existing[0] != "original" and storage == "original"
                conn.execute(
                    "UPDATE items SET last_seen_at = ?, storage = CASE WHEN ? THEN 'original' ELSE storage END "
                    "WHERE sha256 = ?",
                    (now, upgrade, sha),
                )
            conn.execute("INSERT INTO uploads (sha256, name, uploader, uploaded_at) VALUES (?, ?, ?, ?)",
                         (sha, clean_name, uploader, now))
        return sha

    def record_scoring(self, sha256: str, *, model_sha256: str | None, model_label: str | None = None,
                       preprocess_fingerprint: str | None = None, calibration_version: str | None = None,
                       logit: float, probability: float, tier: str, reasons: Sequence[str] = (),
                       guardrails: Mapping[str, Any] | None = None, timings: Mapping[str, Any] | None = None,
                       auto_queue: bool = True) -> int:
        """Append one scoring of a stored item; returns its id.

        A ``review``-tier scoring queues the item unless it is already queued
        or already carries a human label (``auto_queue=False`` to opt out).
        """
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
        row = (
            sha, self.now_iso(), model_sha256, model_label, preprocess_fingerprint, calibration_version,
            logit_f, prob_f, tier, _dump([str(r) for r in reasons]), _dump(dict(guardrails or {})),
            _dump(dict(timings or {})),
        )
        with self._write() as conn:
            self._need_item(sha)
            cur = conn.execute(
                "INSERT INTO scorings (sha256, scored_at, model_sha256, model_label, preprocess_fingerprint, "
                "calibration_version, logit, probability, tier, reasons, guardrails, timings) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            scoring_id = int(cur.lastrowid)
            self._after_scoring(sha, abs(prob_f - 0.5), queue_it=auto_queue and tier == "review")
        return scoring_id

    # -- reads -----------------------------------------------------------
    def has_item(self, sha256: str) -> bool:
        with self._lock:
            return self.conn.execute("SELECT 1 FROM items WHERE sha256 = ?", (check_sha256(sha256),)).fetchone() \
                is not None

    def item(self, sha256: str) -> dict[str, Any]:
        """Everything about one item: facts, uploads, scorings, label history, queue state and events."""
        sha = check_sha256(sha256)
        with self._read():
            out = self._need_item(sha)
            out["uploads"] = self._rows("SELECT name, uploader, uploaded_at FROM uploads WHERE sha256 = ? "
                                        "ORDER BY id", (sha,))
            out["scorings"] = [_scoring_out(r) for r in
                               self._rows("SELECT * FROM scorings WHERE sha256 = ? ORDER BY id", (sha,))]
            out["latest_scoring"] = out["scorings"][-1] if out["scorings"] else None
            out["label_events"] = self._rows("SELECT * FROM label_events WHERE sha256 = ? ORDER BY id", (sha,))
            out["current_label"] = self._row(
                "SELECT c.label, c.reviewer, c.labelled_at, c.event_id, e.note, e.seconds_spent "
                "FROM current_labels c JOIN label_events e ON e.id = c.event_id WHERE c.sha256 = ?", (sha,))
            out["queue"] = self._row("SELECT * FROM queue WHERE sha256 = ?", (sha,))
            out["queue_state"] = out["queue"]["state"] if out["queue"] else None  # shortcut, as in recent_items
            out["queue_events"] = self._rows("SELECT event, actor, at, lease_expires_at, detail FROM queue_events "
                                             "WHERE sha256 = ? ORDER BY id", (sha,))
        return out

    def latest_scoring(self, sha256: str) -> dict[str, Any] | None:
        with self._lock:
            return _scoring_out(self._row(_LATEST_SCORING_SQL, (check_sha256(sha256),)))

    def image_bytes(self, sha256: str) -> bytes | None:
        """The original bytes; in privacy mode (``storage == 'thumbnail'``) the thumbnail; else None."""
        sha = check_sha256(sha256)
        with self._lock:
            row = self.conn.execute("SELECT storage FROM items WHERE sha256 = ?", (sha,)).fetchone()
        if row is None:
            return None
        if row[0] == "original":
            return self.blobs.get_original(sha)
        if row[0] == "thumbnail":
            return self.blobs.get_thumbnail(sha)
        return None

    def recent_items(self, limit: int = 50, offset: int = 0, *, search: str | None = None,
                     tier: str | None = None, state: str | None = None,
                     labelled: bool | None = None) -> list[dict[str, Any]]:
        """Items most recently uploaded first, with latest score, queue state and label.

        ``search`` matches a SHA-256 prefix or part of the original name.
        """
        where, params = [], []
        if search:
            q = search.strip().lower()
            if re.fullmatch(r"[0-9a-f]{4,64}", q):
                where.append("(i.sha256 >= ? AND i.sha256 < ? OR i.name LIKE ?)")
                params += [q, q + "g", f"%{q}%"]
            else:
                where.append("i.name LIKE ? ESCAPE '\\'")
                params.append("%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        if tier:
            where.append("s.tier = ?")
            params.append(tier)
        if state:
            where.append("q.state = ?")
            params.append(state)
        if labelled is not None:
            where.append("c.sha256 IS NOT NULL" if labelled else "c.sha256 IS NULL")
        sql = (
            "SELECT i.sha256, i.name, i.size, i.ext, i.storage, i.uploaded_at, i.uploader, i.last_seen_at, "
            "s.id AS scoring_id, s.scored_at, s.model_sha256, s.logit, s.probability, s.tier, "
            "q.state AS queue_state, q.lease_reviewer, q.lease_expires_at, "
            "c.label, c.reviewer, c.labelled_at "
            "FROM items i "
            "LEFT JOIN scorings s ON s.id = (SELECT max(id) FROM scorings WHERE sha256 = i.sha256) "
            "LEFT JOIN queue q ON q.sha256 = i.sha256 "
            "LEFT JOIN current_labels c ON c.sha256 = i.sha256 "
            + ("WHERE " + " AND ".join(where) + " " if where else "")
            + "ORDER BY i.last_seen_at DESC, i.sha256 LIMIT ? OFFSET ?"
        )
        with self._read():
            return self._rows(sql, (*params, int(limit), int(offset)))

    # -- helpers for the other mixins -----------------------------------
    def _need_item(self, sha: str) -> dict[str, Any]:
        row = self._row("SELECT * FROM items WHERE sha256 = ?", (sha,))
        if row is None:
            raise StoreError(f"No stored item with SHA-256 {sha[:12]}…; upload it first.")
        return row

    def _latest_scoring_row(self, sha: str) -> dict[str, Any] | None:
        return self._row(_LATEST_SCORING_SQL, (sha,))

    def _after_scoring(self, sha: str, distance: float, *, queue_it: bool) -> None:
        """Hook run inside the scoring transaction; the queue layer overrides it."""

"""Owner of ``exports`` and ``export_items``: the record of what was exported, by whom, when.

The files themselves (recalibration CSV/JSONL, hard-negative zip, optional
SQLite batch) are written by :mod:`core.review.export_files`, outside the
database layer; an export is recorded here only once its files are complete,
so a process killed mid-export leaves the same items counted as not yet
exported. This module also holds the column contracts and the rule for what
a hard negative is, which previews and files share.
"""
from __future__ import annotations

import datetime as _dt
import json
import secrets
from typing import Any, Mapping

import sqlalchemy as sa

from core.review.store.base import StoreError
from core.review.store.db import Database
from core.review.store.tables import export_items, exports

#: Recalibration CSV/JSONL columns. The first nine are what ``core calibrate`` has always read;
#: ``name``, ``tier``, ``note``, ``authenticated`` and ``agreement_state`` (blind double review: single,
#: pending_second, agreed, pending_adjudication, adjudicated) were appended (never reorder, only append),
#: then the scoring's verified Content Credentials (:data:`PROVENANCE_COLUMNS`).
RECALIBRATION_COLUMNS = ("sha256", "logit", "probability", "label", "reviewer", "labelled_at", "model_sha256",
                         "calibration_version", "preprocess_fingerprint", "name", "tier", "note", "authenticated",
                         "agreement_state", "provenance", "provenance_signer", "provenance_issuer",
                         "provenance_trusted")
#: From the scoring's guardrail report: ``provenance`` is its decision (ai_generated, ai_edited, unverified,
#: none; empty when never scored or scored before credentials were verified), then who signed, who issued
#: the signer's certificate, and whether that chains to the trust list in force at scoring time.
PROVENANCE_COLUMNS = ("provenance", "provenance_signer", "provenance_issuer", "provenance_trusted")
MANIFEST_COLUMNS = ("path", "sha256", "label", "original_name", "logit", "probability", "tier", "model_sha256",
                    "reviewer", "labelled_at", "content")
LABEL_DIRS = {"real": "0_real", "fake": "1_fake"}


def provenance_columns(guardrails: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """The export's provenance cells from a scoring's stored guardrail report (JSON text or parsed)."""
    if isinstance(guardrails, str):
        try:
            guardrails = json.loads(guardrails) if guardrails else None
        except ValueError:
            guardrails = None
    prov = (guardrails or {}).get("provenance") if isinstance(guardrails, Mapping) else None
    if not isinstance(prov, Mapping):
        return dict.fromkeys(PROVENANCE_COLUMNS)
    return {"provenance": prov.get("decision"), "provenance_signer": prov.get("signer"),
            "provenance_issuer": prov.get("issuer"), "provenance_trusted": prov.get("trusted")}


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


def counts(rows: list[dict[str, Any]], include_all_reviewed: bool) -> dict[str, int]:
    """Items per label, unscored items, hard negatives and how many go into the zip."""
    out = {"items": len(rows), "real": 0, "fake": 0, "unsure": 0, "unscored": 0,
           "hard_negatives": sum(1 for r in rows if is_hard_negative(r))}
    for r in rows:
        out[r["label"]] += 1
        out["unscored"] += r["scoring_id"] is None
    out["zip_items"] = (out["real"] + out["fake"]) if include_all_reviewed else out["hard_negatives"]
    return out


def new_export_id(now: _dt.datetime) -> str:
    return f"exp-{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


class ExportsOwner:
    """Recorded exports and the label events each one covered, on one :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, export_id: str, rows: list[dict[str, Any]], *, filters: Mapping[str, Any],
               counts: Mapping[str, Any], files: Mapping[str, Any], exported_by: str | None,
               repeat_of: str | None) -> None:
        """Record a completed export and the label events (with the scoring used) it wrote."""
        with self.db.write():
            self.db.execute(exports.insert().values(
                id=export_id, created_at=self.db.now_iso(), exported_by=exported_by,
                filters=json.dumps(dict(filters), sort_keys=True), counts=json.dumps(dict(counts), sort_keys=True),
                files=json.dumps(dict(files), sort_keys=True), repeat_of=repeat_of))
            if rows:
                self.db.execute(export_items.insert(), [
                    {"export_id": export_id, "label_event_id": r["label_event_id"], "scoring_id": r["scoring_id"],
                     "sha256": r["sha256"]} for r in rows])

    def get(self, export_id: str) -> dict[str, Any]:
        row = self.db.row(sa.select(exports).where(exports.c.id == export_id))
        if row is None:
            raise StoreError(f"No export with id {export_id!r}.")
        return _parsed(row)

    def history(self, limit: int) -> list[dict[str, Any]]:
        """Recorded exports, newest first, with filters, counts and file hashes."""
        return [_parsed(r) for r in self.db.rows(
            sa.select(exports).order_by(exports.c.created_at.desc(), exports.c.id.desc()).limit(int(limit)))]


def _parsed(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("filters", "counts", "files"):
        row[key] = json.loads(row[key])
    return row

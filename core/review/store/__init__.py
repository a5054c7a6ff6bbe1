"""Review store: items, score log, uncertainty-first queue with leases, append-only labels, exports.

One SQLite file (WAL, foreign keys, versioned schema) through sqlite-utils,
with image bytes in a content-addressed folder beside it. Open it with
``ReviewStore(path)`` or ``ReviewStore.open()`` (the default data directory).
"""
from __future__ import annotations

from core.review.store.base import DEFAULT_LEASE_SECONDS, DEFAULT_UNDO_WINDOW_SECONDS, LABELS, TIERS, StoreError
from core.review.store.exports import MANIFEST_COLUMNS, RECALIBRATION_COLUMNS, is_hard_negative, model_verdict
from core.review.store.items import check_sha256, scoring_kwargs
from core.review.store.labels import LabelFilters
from core.review.store.monitor import PSI_ALERT, PSI_WARN, drift_level, psi
from core.review.store.queue import QUEUE_STATES
from core.review.store.review_store import ReviewStore
from core.review.store.schema import SCHEMA_VERSION

__all__ = [
    "DEFAULT_LEASE_SECONDS", "DEFAULT_UNDO_WINDOW_SECONDS", "LABELS", "MANIFEST_COLUMNS", "PSI_ALERT", "PSI_WARN",
    "QUEUE_STATES", "RECALIBRATION_COLUMNS", "SCHEMA_VERSION", "TIERS", "LabelFilters", "ReviewStore",
    "StoreError", "check_sha256", "drift_level", "is_hard_negative", "model_verdict", "psi", "scoring_kwargs",
]

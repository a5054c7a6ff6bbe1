"""Review store: items, score log, uncertainty-first queue with leases, append-only labels, export records.

SQLAlchemy Core on an embedded SQLite file (the default, no setup) or on
PostgreSQL (a ``postgresql+psycopg://`` URL, for a team), with image bytes in
a content-addressed folder. Open it with :func:`open_store` (what ``--db`` and
the dashboard use), ``ReviewStore(path_or_url)`` or ``ReviewStore.open()``.
Each table has one owner module (see :mod:`core.review.store.tables`).
"""
from __future__ import annotations

from core.review.store.base import (DEFAULT_LEASE_SECONDS, DEFAULT_UNDO_WINDOW_SECONDS, LABELS, TIERS, StoreError,
                                    from_iso)
from core.review.store.db import is_url
from core.review.store.exports import MANIFEST_COLUMNS, RECALIBRATION_COLUMNS, is_hard_negative, model_verdict
from core.review.store.items import check_sha256, scoring_kwargs
from core.review.store.labels import LabelFilters
from core.review.store.monitor import PSI_ALERT, PSI_WARN, drift_level, psi
from core.review.store.queue import QUEUE_STATES, priority
from core.review.store.review_store import ReviewStore, open_store
from core.review.store.schema import SCHEMA_VERSION

__all__ = [
    "DEFAULT_LEASE_SECONDS", "DEFAULT_UNDO_WINDOW_SECONDS", "LABELS", "MANIFEST_COLUMNS", "PSI_ALERT", "PSI_WARN",
    "QUEUE_STATES", "RECALIBRATION_COLUMNS", "SCHEMA_VERSION", "TIERS", "LabelFilters", "ReviewStore",
    "StoreError", "check_sha256", "drift_level", "from_iso", "is_hard_negative", "is_url", "model_verdict",
    "open_store", "priority", "psi", "scoring_kwargs",
]

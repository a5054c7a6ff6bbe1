"""The tables as SQLAlchemy Core objects, for building statements that run on both databases.

These describe the schema at :data:`~core.review.store.schema.SCHEMA_VERSION`
so owners can write ``select(queue)…`` once for SQLite and PostgreSQL; the
DDL itself (constraints, partial indexes, append-only triggers) lives in the
versioned migrations of :mod:`core.review.store.schema`, never here.
Each table has one owner module, the only one that writes it:

=================================  =========================================
items, uploads, scorings           :mod:`core.review.store.items`
queue (+ _events, _exclusions)     :mod:`core.review.store.queue`
label_events, current_labels       :mod:`core.review.store.labels`
exports, export_items              :mod:`core.review.store.exports`
job_leases                         :mod:`core.review.store.jobs`
settings                           :mod:`core.review.store.review_store`
=================================  =========================================
"""
from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
_T, _F, _I = sa.Text, sa.Float, sa.BigInteger

settings = sa.Table("settings", metadata, sa.Column("key", _T, primary_key=True), sa.Column("value", _T))

items = sa.Table(
    "items", metadata,
    sa.Column("sha256", _T, primary_key=True), sa.Column("name", _T), sa.Column("size", _I), sa.Column("ext", _T),
    sa.Column("storage", _T), sa.Column("uploaded_at", _T), sa.Column("uploader", _T), sa.Column("last_seen_at", _T),
)

uploads = sa.Table(
    "uploads", metadata,
    sa.Column("id", _I, primary_key=True), sa.Column("sha256", _T), sa.Column("name", _T),
    sa.Column("uploader", _T), sa.Column("uploaded_at", _T),
)

scorings = sa.Table(
    "scorings", metadata,
    sa.Column("id", _I, primary_key=True), sa.Column("sha256", _T), sa.Column("scored_at", _T),
    sa.Column("model_sha256", _T), sa.Column("model_label", _T), sa.Column("preprocess_fingerprint", _T),
    sa.Column("calibration_version", _T), sa.Column("logit", _F), sa.Column("probability", _F),
    sa.Column("tier", _T), sa.Column("reasons", _T), sa.Column("guardrails", _T), sa.Column("timings", _T),
    sa.Column("precision", _T),
)

queue = sa.Table(
    "queue", metadata,
    sa.Column("sha256", _T, primary_key=True), sa.Column("state", _T), sa.Column("distance", _F),
    sa.Column("round", _I), sa.Column("ready_at", _T), sa.Column("enqueued_at", _T), sa.Column("enqueued_by", _T),
    sa.Column("reason", _T), sa.Column("lease_reviewer", _T), sa.Column("lease_expires_at", _T),
    sa.Column("stage", _T), sa.Column("model_p", _F),
)

#: Background jobs (learning, queue re-prioritisation): one lease per job name, across processes.
job_leases = sa.Table(
    "job_leases", metadata,
    sa.Column("name", _T, primary_key=True), sa.Column("holder", _T), sa.Column("expires_at", _T),
    sa.Column("done_marker", _T), sa.Column("done_at", _T),
)

#: Reviewers who may not claim an item's later review stages (they labelled an earlier one).
queue_exclusions = sa.Table(
    "queue_exclusions", metadata,
    sa.Column("sha256", _T, primary_key=True), sa.Column("reviewer", _T, primary_key=True),
)

queue_events = sa.Table(
    "queue_events", metadata,
    sa.Column("id", _I, primary_key=True), sa.Column("sha256", _T), sa.Column("event", _T), sa.Column("actor", _T),
    sa.Column("at", _T), sa.Column("lease_expires_at", _T), sa.Column("detail", _T),
)

label_events = sa.Table(
    "label_events", metadata,
    sa.Column("id", _I, primary_key=True), sa.Column("sha256", _T), sa.Column("kind", _T), sa.Column("label", _T),
    sa.Column("undoes", _I), sa.Column("reviewer", _T), sa.Column("created_at", _T), sa.Column("note", _T),
    sa.Column("seconds_spent", _F), sa.Column("scoring_id", _I), sa.Column("authenticated", sa.Boolean),
    sa.Column("stage", _T),
)

current_labels = sa.Table(
    "current_labels", metadata,
    sa.Column("sha256", _T, primary_key=True), sa.Column("event_id", _I), sa.Column("label", _T),
    sa.Column("reviewer", _T), sa.Column("labelled_at", _T),
)

exports = sa.Table(
    "exports", metadata,
    sa.Column("id", _T, primary_key=True), sa.Column("created_at", _T), sa.Column("exported_by", _T),
    sa.Column("filters", _T), sa.Column("counts", _T), sa.Column("files", _T), sa.Column("repeat_of", _T),
)

export_items = sa.Table(
    "export_items", metadata,
    sa.Column("export_id", _T, primary_key=True), sa.Column("label_event_id", _I, primary_key=True),
    sa.Column("scoring_id", _I), sa.Column("sha256", _T),
)

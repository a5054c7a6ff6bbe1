"""Schema and its versioned migrations, for SQLite and PostgreSQL.

Each migration has one script per database (same tables, columns and rules;
the spelling of types, checks and triggers differs) and is applied once, in
order, inside one transaction: ``BEGIN IMMEDIATE`` on SQLite, a transaction
holding an advisory lock on PostgreSQL (its DDL is transactional). Several
processes opening a new database at once therefore agree on one schema, and
a half-applied migration can never be left behind. The version is
``PRAGMA user_version`` on SQLite (what files made before version 2 carry)
and the highest row of ``schema_migrations`` on PostgreSQL. Never edit a
released migration: append a new one. Version 1 is exactly the schema the
SQLite-only store created, so its files migrate in place.

History tables (uploads, scorings, label events, queue events, exports) are
append-only, enforced by triggers on both databases: an undo is a new event,
never a delete.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import sqlalchemy as sa

from core.review.store.base import StoreError, iso, utc_now
from core.review.store.db import POSTGRESQL, Database

_APPEND_ONLY = ("uploads", "scorings", "label_events", "queue_events", "exports", "export_items")


def _append_only_triggers() -> str:
    out = []
    for table in _APPEND_ONLY:
        for op in ("UPDATE", "DELETE"):
            out.append(
                f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END;"
            )
    return "\n".join(out)


_V1 = """
CREATE TABLE settings (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);

-- One row per distinct content (SHA-256 of the bytes); first upload's facts.
CREATE TABLE items (
  sha256 TEXT PRIMARY KEY CHECK (length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
  name TEXT NOT NULL,
  size INTEGER NOT NULL CHECK (size > 0),
  ext TEXT NOT NULL,
  storage TEXT NOT NULL CHECK (storage IN ('original', 'thumbnail', 'none')),
  uploaded_at TEXT NOT NULL,
  uploader TEXT,
  last_seen_at TEXT NOT NULL               -- latest upload of these bytes (recent-items order)
);
CREATE INDEX items_last_seen_at ON items(last_seen_at);

-- Every upload, including repeats of the same bytes.
CREATE TABLE uploads (
  id INTEGER PRIMARY KEY,
  sha256 TEXT NOT NULL REFERENCES items(sha256),
  name TEXT NOT NULL,
  uploader TEXT,
  uploaded_at TEXT NOT NULL
);
CREATE INDEX uploads_sha256 ON uploads(sha256);

-- Every scoring: the score log used by monitoring and exports.
CREATE TABLE scorings (
  id INTEGER PRIMARY KEY,
  sha256 TEXT NOT NULL REFERENCES items(sha256),
  scored_at TEXT NOT NULL,
  model_sha256 TEXT,
  model_label TEXT,
  preprocess_fingerprint TEXT,
  calibration_version TEXT,
  logit REAL NOT NULL,
  probability REAL NOT NULL CHECK (probability >= 0.0 AND probability <= 1.0),
  tier TEXT NOT NULL CHECK (tier IN ('real', 'review', 'fake')),
  reasons TEXT NOT NULL DEFAULT '[]',
  guardrails TEXT NOT NULL DEFAULT '{}',
  timings TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX scorings_sha256 ON scorings(sha256, id);
CREATE INDEX scorings_scored_at ON scorings(scored_at);

-- Current queue state (derived; its history is queue_events).
CREATE TABLE queue (
  sha256 TEXT PRIMARY KEY REFERENCES items(sha256),
  state TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'labelled')),
  distance REAL NOT NULL DEFAULT 0.5,      -- |p - 0.5| of the latest scoring: smaller = claimed first
  round INTEGER NOT NULL DEFAULT 0,        -- bumped by skip: sends the item to the back
  ready_at TEXT NOT NULL,                  -- tie-break: oldest first
  enqueued_at TEXT NOT NULL,
  enqueued_by TEXT,
  reason TEXT NOT NULL,
  lease_reviewer TEXT,
  lease_expires_at TEXT,
  CHECK ((state = 'leased') = (lease_reviewer IS NOT NULL AND lease_expires_at IS NOT NULL))
);
CREATE INDEX queue_next ON queue(round, distance, ready_at, sha256) WHERE state = 'queued';
CREATE INDEX queue_leases ON queue(lease_expires_at) WHERE state = 'leased';
CREATE INDEX queue_state ON queue(state);

CREATE TABLE queue_events (
  id INTEGER PRIMARY KEY,
  sha256 TEXT NOT NULL REFERENCES items(sha256),
  event TEXT NOT NULL CHECK (event IN ('enqueued', 'claimed', 'renewed', 'released', 'skipped',
                                        'expired', 'labelled', 'undone')),
  actor TEXT,
  at TEXT NOT NULL,
  lease_expires_at TEXT,
  detail TEXT
);
CREATE INDEX queue_events_sha256 ON queue_events(sha256, id);
CREATE INDEX queue_events_at ON queue_events(at);

-- The audit trail of decisions: append-only; an undo is a new event.
CREATE TABLE label_events (
  id INTEGER PRIMARY KEY,
  sha256 TEXT NOT NULL REFERENCES items(sha256),
  kind TEXT NOT NULL CHECK (kind IN ('label', 'undo')),
  label TEXT CHECK (label IN ('real', 'fake', 'unsure')),
  undoes INTEGER UNIQUE REFERENCES label_events(id),
  reviewer TEXT NOT NULL CHECK (length(trim(reviewer)) > 0),
  created_at TEXT NOT NULL,
  note TEXT,
  seconds_spent REAL CHECK (seconds_spent IS NULL OR seconds_spent >= 0),
  scoring_id INTEGER REFERENCES scorings(id),
  CHECK ((kind = 'label' AND label IS NOT NULL AND undoes IS NULL)
      OR (kind = 'undo' AND label IS NULL AND undoes IS NOT NULL))
);
CREATE INDEX label_events_sha256 ON label_events(sha256, id);
CREATE INDEX label_events_reviewer ON label_events(reviewer, id);
CREATE INDEX label_events_created_at ON label_events(created_at);

-- Derived: each item's label in force (latest label event not undone).
CREATE TABLE current_labels (
  sha256 TEXT PRIMARY KEY REFERENCES items(sha256),
  event_id INTEGER NOT NULL UNIQUE REFERENCES label_events(id),
  label TEXT NOT NULL,
  reviewer TEXT NOT NULL,
  labelled_at TEXT NOT NULL
);
CREATE INDEX current_labels_labelled_at ON current_labels(labelled_at);

CREATE TABLE exports (
  id TEXT PRIMARY KEY,
  created_at TEXT NOT NULL,
  exported_by TEXT,
  filters TEXT NOT NULL,
  counts TEXT NOT NULL,
  files TEXT NOT NULL,
  repeat_of TEXT REFERENCES exports(id)
);
CREATE INDEX exports_created_at ON exports(created_at);

CREATE TABLE export_items (
  export_id TEXT NOT NULL REFERENCES exports(id),
  label_event_id INTEGER NOT NULL REFERENCES label_events(id),
  scoring_id INTEGER REFERENCES scorings(id),
  sha256 TEXT NOT NULL REFERENCES items(sha256),
  PRIMARY KEY (export_id, label_event_id)
);
CREATE INDEX export_items_event ON export_items(label_event_id);
"""


def _pg_append_only() -> tuple[str, ...]:
    out = ["CREATE FUNCTION ladeda_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
           "RAISE EXCEPTION USING MESSAGE = TG_TABLE_NAME || ' is append-only', ERRCODE = 'restrict_violation'; "
           "END $$"]
    for table in _APPEND_ONLY:
        out.append(f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
                   "FOR EACH ROW EXECUTE FUNCTION ladeda_append_only()")
        out.append(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION ladeda_append_only()")
    return tuple(out)


_ID = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
#: Version 1 on PostgreSQL: the same tables and rules as ``_V1``.
_PG_V1 = (
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE items (sha256 TEXT PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'), name TEXT NOT NULL, "
    "size BIGINT NOT NULL CHECK (size > 0), ext TEXT NOT NULL, "
    "storage TEXT NOT NULL CHECK (storage IN ('original', 'thumbnail', 'none')), uploaded_at TEXT NOT NULL, "
    "uploader TEXT, last_seen_at TEXT NOT NULL)",
    "CREATE INDEX items_last_seen_at ON items(last_seen_at)",
    f"CREATE TABLE uploads (id {_ID}, sha256 TEXT NOT NULL REFERENCES items(sha256), name TEXT NOT NULL, "
    "uploader TEXT, uploaded_at TEXT NOT NULL)",
    "CREATE INDEX uploads_sha256 ON uploads(sha256)",
    f"CREATE TABLE scorings (id {_ID}, sha256 TEXT NOT NULL REFERENCES items(sha256), scored_at TEXT NOT NULL, "
    "model_sha256 TEXT, model_label TEXT, preprocess_fingerprint TEXT, calibration_version TEXT, "
    "logit DOUBLE PRECISION NOT NULL, "
    "probability DOUBLE PRECISION NOT NULL CHECK (probability >= 0.0 AND probability <= 1.0), "
    "tier TEXT NOT NULL CHECK (tier IN ('real', 'review', 'fake')), reasons TEXT NOT NULL DEFAULT '[]', "
    "guardrails TEXT NOT NULL DEFAULT '{}', timings TEXT NOT NULL DEFAULT '{}')",
    "CREATE INDEX scorings_sha256 ON scorings(sha256, id)",
    "CREATE INDEX scorings_scored_at ON scorings(scored_at)",
    "CREATE TABLE queue (sha256 TEXT PRIMARY KEY REFERENCES items(sha256), "
    "state TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'labelled')), "
    "distance DOUBLE PRECISION NOT NULL DEFAULT 0.5, round BIGINT NOT NULL DEFAULT 0, ready_at TEXT NOT NULL, "
    "enqueued_at TEXT NOT NULL, enqueued_by TEXT, reason TEXT NOT NULL, lease_reviewer TEXT, lease_expires_at TEXT, "
    "CHECK ((state = 'leased') = (lease_reviewer IS NOT NULL AND lease_expires_at IS NOT NULL)))",
    "CREATE INDEX queue_next ON queue(round, distance, ready_at, sha256) WHERE state = 'queued'",
    "CREATE INDEX queue_leases ON queue(lease_expires_at) WHERE state = 'leased'",
    "CREATE INDEX queue_state ON queue(state)",
    f"CREATE TABLE queue_events (id {_ID}, sha256 TEXT NOT NULL REFERENCES items(sha256), "
    "event TEXT NOT NULL CHECK (event IN ('enqueued', 'claimed', 'renewed', 'released', 'skipped', 'expired', "
    "'labelled', 'undone')), actor TEXT, at TEXT NOT NULL, lease_expires_at TEXT, detail TEXT)",
    "CREATE INDEX queue_events_sha256 ON queue_events(sha256, id)",
    "CREATE INDEX queue_events_at ON queue_events(at)",
    f"CREATE TABLE label_events (id {_ID}, sha256 TEXT NOT NULL REFERENCES items(sha256), "
    "kind TEXT NOT NULL CHECK (kind IN ('label', 'undo')), label TEXT CHECK (label IN ('real', 'fake', 'unsure')), "
    "undoes BIGINT UNIQUE REFERENCES label_events(id), "
    "reviewer TEXT NOT NULL CHECK (length(trim(reviewer)) > 0), created_at TEXT NOT NULL, note TEXT, "
    "seconds_spent DOUBLE PRECISION CHECK (seconds_spent IS NULL OR seconds_spent >= 0), "
    "scoring_id BIGINT REFERENCES scorings(id), "
    "CHECK ((kind = 'label' AND label IS NOT NULL AND undoes IS NULL) "
    "OR (kind = 'undo' AND label IS NULL AND undoes IS NOT NULL)))",
    "CREATE INDEX label_events_sha256 ON label_events(sha256, id)",
    "CREATE INDEX label_events_reviewer ON label_events(reviewer, id)",
    "CREATE INDEX label_events_created_at ON label_events(created_at)",
    "CREATE TABLE current_labels (sha256 TEXT PRIMARY KEY REFERENCES items(sha256), "
    "event_id BIGINT NOT NULL UNIQUE REFERENCES label_events(id), label TEXT NOT NULL, reviewer TEXT NOT NULL, "
    "labelled_at TEXT NOT NULL)",
    "CREATE INDEX current_labels_labelled_at ON current_labels(labelled_at)",
    "CREATE TABLE exports (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, exported_by TEXT, filters TEXT NOT NULL, "
    "counts TEXT NOT NULL, files TEXT NOT NULL, repeat_of TEXT REFERENCES exports(id))",
    "CREATE INDEX exports_created_at ON exports(created_at)",
    "CREATE TABLE export_items (export_id TEXT NOT NULL REFERENCES exports(id), "
    "label_event_id BIGINT NOT NULL REFERENCES label_events(id), scoring_id BIGINT REFERENCES scorings(id), "
    "sha256 TEXT NOT NULL REFERENCES items(sha256), PRIMARY KEY (export_id, label_event_id))",
    "CREATE INDEX export_items_event ON export_items(label_event_id)",
) + _pg_append_only()

#: Version 2: whether a reviewer was signed in, and which numeric path served a scoring.
_V2 = """
ALTER TABLE label_events ADD COLUMN authenticated INTEGER NOT NULL DEFAULT 0 CHECK (authenticated IN (0, 1));
ALTER TABLE scorings ADD COLUMN "precision" TEXT;
"""
_PG_V2 = (
    "ALTER TABLE label_events ADD COLUMN authenticated BOOLEAN NOT NULL DEFAULT FALSE",
    'ALTER TABLE scorings ADD COLUMN "precision" TEXT',
)


#: Version 3: blind double review. The queue row says which review stage an item waits for, label
#: events say at which stage they were given, and reviewers who already labelled an item are
#: excluded from claiming its later stages (so the second review is independent).
_V3 = """
ALTER TABLE queue ADD COLUMN stage TEXT NOT NULL DEFAULT 'first' CHECK (stage IN ('first', 'second', 'adjudication'));
ALTER TABLE label_events ADD COLUMN stage TEXT NOT NULL DEFAULT 'first' CHECK (stage IN ('first', 'second', 'adjudication'));
CREATE TABLE queue_exclusions (
  sha256 TEXT NOT NULL REFERENCES items(sha256),
  reviewer TEXT NOT NULL,
  PRIMARY KEY (sha256, reviewer)
);
"""
_PG_V3 = (
    "ALTER TABLE queue ADD COLUMN stage TEXT NOT NULL DEFAULT 'first' "
    "CHECK (stage IN ('first', 'second', 'adjudication'))",
    "ALTER TABLE label_events ADD COLUMN stage TEXT NOT NULL DEFAULT 'first' "
    "CHECK (stage IN ('first', 'second', 'adjudication'))",
    "CREATE TABLE queue_exclusions (sha256 TEXT NOT NULL REFERENCES items(sha256), reviewer TEXT NOT NULL, "
    "PRIMARY KEY (sha256, reviewer))",
)


#: Version 4, SQLite only: with an index on ``state`` alone SQLite's planner finds every queued row and
#: sorts them for each claim (tens of ms at 100k items); without it, a claim walks ``queue_next`` in order
#: and stops at the first row. PostgreSQL's cost-based planner picks ``queue_next`` anyway: nothing to do.
_V4 = "DROP INDEX IF EXISTS queue_state;"


#: Version 5: the learning loop. ``queue.model_p`` is the active model's probability that the item's
#: priority was last computed from (recomputed from stored features when a version becomes active);
#: ``job_leases`` holds one row per background job (learning, queue re-prioritisation): who holds it
#: until when (the database clock, like claims), and the marker of the last finished run.
_V5 = """
ALTER TABLE queue ADD COLUMN model_p REAL CHECK (model_p IS NULL OR (model_p >= 0.0 AND model_p <= 1.0));
CREATE TABLE job_leases (
  name TEXT PRIMARY KEY,
  holder TEXT,
  expires_at TEXT,
  done_marker TEXT,
  done_at TEXT,
  CHECK ((holder IS NULL) = (expires_at IS NULL))
);
"""
_PG_V5 = (
    "ALTER TABLE queue ADD COLUMN model_p DOUBLE PRECISION CHECK (model_p IS NULL OR (model_p >= 0.0 AND model_p <= 1.0))",
    "CREATE TABLE job_leases (name TEXT PRIMARY KEY, holder TEXT, expires_at TEXT, done_marker TEXT, done_at TEXT, "
    "CHECK ((holder IS NULL) = (expires_at IS NULL)))",
)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sqlite: str  #: one script (split into statements here)
    postgresql: tuple[str, ...]  #: one statement per entry


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "items, uploads, scorings, queue, label events, exports", _V1 + _append_only_triggers(), _PG_V1),
    Migration(2, "label_events.authenticated, scorings.precision", _V2, _PG_V2),
    Migration(3, "blind double review: queue.stage, label_events.stage, queue_exclusions", _V3, _PG_V3),
    Migration(4, "SQLite: drop queue_state so claims walk queue_next", _V4, ()),
    Migration(5, "learning loop: queue.model_p, job_leases", _V5, _PG_V5),
)
SCHEMA_VERSION = MIGRATIONS[-1].version

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
  version INTEGER PRIMARY KEY,
  description TEXT NOT NULL,
  applied_at TEXT NOT NULL
)"""
#: Advisory-lock key that serialises migrations on PostgreSQL.
_PG_MIGRATION_LOCK = 0x1ADEDA


def schema_version(db: Database) -> int:
    if db.dialect == POSTGRESQL:
        if db.scalar(sa.text("SELECT to_regclass('schema_migrations')")) is None:
            return 0
        return int(db.scalar(sa.text("SELECT coalesce(max(version), 0) FROM schema_migrations")))
    return int(db.scalar(sa.text("PRAGMA user_version")))


def _statements(sql: str) -> list[str]:
    """Split a SQLite script into statements (trigger bodies kept whole) for use inside our transaction."""
    out, buf = [], ""
    for line in sql.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement in migration: {buf[:80]!r}")
    return out


def migrate(db: Database) -> int:
    """Bring the database up to :data:`SCHEMA_VERSION`; returns the version found before."""
    found = schema_version(db)
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"This review database uses schema version {found}, newer than this program "
            f"understands ({SCHEMA_VERSION}). Upgrade the program; the database was left untouched."
        )
    if found == SCHEMA_VERSION:
        return found
    pg = db.dialect == POSTGRESQL
    with db.write() as conn:
        if pg:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        found = schema_version(db)  # another process may have migrated meanwhile
        conn.exec_driver_sql(_BOOKKEEPING)
        for m in MIGRATIONS:
            if m.version <= found:
                continue
            for statement in (m.postgresql if pg else _statements(m.sqlite)):
                conn.exec_driver_sql(statement)
            conn.execute(sa.text("INSERT INTO schema_migrations (version, description, applied_at) "
                                 "VALUES (:v, :d, :t)"), {"v": m.version, "d": m.description, "t": iso(utc_now())})
            if not pg:
                conn.exec_driver_sql(f"PRAGMA user_version = {m.version}")
    return found

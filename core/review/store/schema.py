"""Schema and its migrations, versioned with ``PRAGMA user_version``.

Each migration is applied once, in order, inside one ``BEGIN IMMEDIATE``
transaction, so several processes opening a new file at the same time agree
on a single schema and a half-applied migration can never be left behind.
Never edit a released migration: append a new one.

History tables (uploads, scorings, label events, queue events, exports) are
append-only, enforced by triggers: an undo is a new event, never a delete.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from core.review.store.base import StoreError, iso, utc_now

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


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "items, uploads, scorings, queue, label events, exports", _V1 + _append_only_triggers()),
)
SCHEMA_VERSION = MIGRATIONS[-1].version

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
  version INTEGER PRIMARY KEY,
  description TEXT NOT NULL,
  applied_at TEXT NOT NULL
)"""


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _statements(sql: str) -> list[str]:
    """Split a script into statements (trigger bodies kept whole) for use inside our transaction."""
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


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the file up to :data:`SCHEMA_VERSION`; returns the version found before."""
    found = schema_version(conn)
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"This review database uses schema version {found}, newer than this program "
            f"understands ({SCHEMA_VERSION}). Upgrade the program; the file was left untouched."
        )
    if found == SCHEMA_VERSION:
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = schema_version(conn)  # another process may have migrated meanwhile
        conn.execute(_BOOKKEEPING)
        for m in MIGRATIONS:
            if m.version <= found:
                continue
            for statement in _statements(m.sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                         (m.version, m.description, iso(utc_now())))
            conn.execute(f"PRAGMA user_version = {m.version}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return found

"""Labels as an append-only history: who decided what, when, and how long it took.

A label is an event; undo is another event pointing at the one it cancels,
so nothing an analyst decided is ever overwritten. ``current_labels`` is a
derived table (the latest label event not undone) kept in the same
transaction, so exports and lists never replay the history.
"""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from core.review.store.base import DEFAULT_LEASE_SECONDS, LABELS, StoreError, iso, parse_time
from core.review.store.items import check_sha256
from core.review.store.queue import QueueMixin, check_reviewer

MAX_NOTE = 5000


@dataclass(frozen=True)
class LabelFilters:
    """Which labelled items a list, preview or export covers (all optional)."""

    since: str | None = None  #: labelled at or after (UTC ISO-8601)
    until: str | None = None  #: labelled before
    reviewer: str | None = None
    label: str | None = None  #: real, fake or unsure
    model_sha256: str | None = None  #: use (and require) a scoring by this model
    only_new: bool = False  #: skip label events already in an export

    @classmethod
    def make(cls, filters: Mapping[str, Any] | None = None, **kwargs: Any) -> "LabelFilters":
        """Validate and normalise filters given as a mapping and/or keywords."""
        raw = {**dict(filters or {}), **kwargs}
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise StoreError(f"Unknown filter(s): {', '.join(sorted(unknown))}.")
        label = raw.get("label") or None
        if label is not None and label not in LABELS:
            raise StoreError(f"Unknown label {label!r}; expected one of {', '.join(LABELS)}.")
        since, until = parse_time(raw.get("since"), what="start time"), parse_time(raw.get("until"), what="end time")
        if since and until and since >= until:
            raise StoreError("The time range is empty: 'since' must be before 'until'.")
        model = (raw.get("model_sha256") or "").strip().lower() or None
        return cls(since=since, until=until, reviewer=(raw.get("reviewer") or "").strip() or None, label=label,
                   model_sha256=model, only_new=bool(raw.get("only_new", False)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sql(self) -> tuple[str, list[Any]]:
        """SELECT of the matching labelled items with the scoring used for each (latest, or latest by model)."""
        params: list[Any] = []
        model_clause = ""
        if self.model_sha256:
            model_clause = " AND model_sha256 = ?"
            params.append(self.model_sha256)
        where = ["1"]
        if self.model_sha256:
            where.append("s.id IS NOT NULL")
        for column, value, op in (("c.labelled_at", self.since, ">="), ("c.labelled_at", self.until, "<"),
                                  ("c.reviewer", self.reviewer, "="), ("c.label", self.label, "=")):
            if value is not None:
                where.append(f"{column} {op} ?")
                params.append(value)
        if self.only_new:
            where.append("NOT EXISTS (SELECT 1 FROM export_items x WHERE x.label_event_id = c.event_id)")
        sql = (
            "SELECT c.sha256, c.event_id AS label_event_id, c.label, c.reviewer, c.labelled_at, "
            "e.note, e.seconds_spent, i.name, i.ext, i.storage, "
            "s.id AS scoring_id, s.logit, s.probability, s.tier, s.model_sha256, s.model_label, "
            "s.calibration_version, s.preprocess_fingerprint "
            "FROM current_labels c JOIN items i ON i.sha256 = c.sha256 "
            "JOIN label_events e ON e.id = c.event_id "
            f"LEFT JOIN scorings s ON s.id = (SELECT max(id) FROM scorings WHERE sha256 = c.sha256{model_clause}) "
            f"WHERE {' AND '.join(where)} ORDER BY c.labelled_at, c.sha256"
        )
        return sql, params


class LabelsMixin(QueueMixin):
    undo_window_seconds: float

    def label(self, sha256: str, label: str, reviewer: str, note: str | None = None,
              seconds_spent: float | None = None) -> dict[str, Any]:
        """Record a decision; allowed for the lease holder or on an item nobody else holds.

        The item leaves the queue (state ``labelled``); a later label supersedes
        this one without erasing it.
        """
        sha, reviewer = check_sha256(sha256), check_reviewer(reviewer)
        if label not in LABELS:
            raise StoreError(f"Unknown label {label!r}; expected one of {', '.join(LABELS)}.")
        note = (note or "").strip()[:MAX_NOTE] or None
        if seconds_spent is not None:
            seconds_spent = float(seconds_spent)
            if not math.isfinite(seconds_spent) or seconds_spent < 0:
                raise StoreError("seconds_spent must be a non-negative number.")
        with self._write() as conn:
            self._need_item(sha)
            now = self.now_iso()
            queue = self._row("SELECT state, lease_reviewer, lease_expires_at FROM queue WHERE sha256 = ?", (sha,))
            if queue and queue["state"] == "leased" and queue["lease_reviewer"] != reviewer:
                if queue["lease_expires_at"] > now:
                    raise StoreError(f"Item {sha[:12]}… is leased to {queue['lease_reviewer']} until "
                                     f"{queue['lease_expires_at']}; it cannot be labelled by {reviewer} now.")
                self._event(sha, "expired", queue["lease_reviewer"], now, lease_expires_at=queue["lease_expires_at"])
            scoring = self._latest_scoring_row(sha)
            cur = conn.execute(
                "INSERT INTO label_events (sha256, kind, label, reviewer, created_at, note, seconds_spent, scoring_id) "
                "VALUES (?, 'label', ?, ?, ?, ?, ?, ?)",
                (sha, label, reviewer, now, note, seconds_spent, scoring["id"] if scoring else None))
            event_id = int(cur.lastrowid)
            self._set_current(sha, event_id, label, reviewer, now)
            if queue is None:  # labelled outside the queue ("label now"): a row, but no queue inflow
                conn.execute(
                    "INSERT INTO queue (sha256, state, distance, round, ready_at, enqueued_at, enqueued_by, reason) "
                    "VALUES (?, 'labelled', ?, 0, ?, ?, ?, 'labelled directly')",
                    (sha, abs(scoring["probability"] - 0.5) if scoring else 0.5, now, now, reviewer))
            conn.execute("UPDATE queue SET state = 'labelled', lease_reviewer = NULL, lease_expires_at = NULL "
                         "WHERE sha256 = ?", (sha,))
            self._event(sha, "labelled", reviewer, now, detail=label)
            return self._row("SELECT * FROM label_events WHERE id = ?", (event_id,))

    def undo_last(self, reviewer: str, window_seconds: float | None = None) -> dict[str, Any]:
        """Cancel ``reviewer``'s latest label if it is recent enough, with a new ``undo`` event.

        The previous label (if any) comes back into force; an item left with no
        label is leased back to the reviewer so it can be labelled again (or
        returns to the queue when that lease runs out). Repeating walks further back.
        """
        reviewer = check_reviewer(reviewer)
        window = self.undo_window_seconds if window_seconds is None else float(window_seconds)
        if not window > 0:
            raise StoreError("The undo window must be positive.")
        with self._write() as conn:
            now = self.now()
            ev = self._row(
                "SELECT * FROM label_events e WHERE reviewer = ? AND kind = 'label' "
                "AND NOT EXISTS (SELECT 1 FROM label_events u WHERE u.undoes = e.id) ORDER BY id DESC LIMIT 1",
                (reviewer,))
            if ev is None or ev["created_at"] < iso(now - _dt.timedelta(seconds=window)):
                raise StoreError(f"Nothing to undo: {reviewer} has no label from the last {_minutes(window)}.")
            sha = ev["sha256"]
            later = self._row(
                "SELECT reviewer, created_at FROM label_events e WHERE sha256 = ? AND id > ? AND kind = 'label' "
                "AND NOT EXISTS (SELECT 1 FROM label_events u WHERE u.undoes = e.id) ORDER BY id DESC LIMIT 1",
                (sha, ev["id"]))
            if later is not None:
                raise StoreError(f"Cannot undo: item {sha[:12]}… was labelled again by {later['reviewer']} "
                                 f"at {later['created_at']}.")
            now_s = iso(now)
            cur = conn.execute("INSERT INTO label_events (sha256, kind, undoes, reviewer, created_at) "
                               "VALUES (?, 'undo', ?, ?, ?)", (sha, ev["id"], reviewer, now_s))
            previous = self._row(
                "SELECT id, label, reviewer, created_at FROM label_events e WHERE sha256 = ? AND kind = 'label' "
                "AND NOT EXISTS (SELECT 1 FROM label_events u WHERE u.undoes = e.id) ORDER BY id DESC LIMIT 1",
                (sha,))
            if previous:
                self._set_current(sha, previous["id"], previous["label"], previous["reviewer"], previous["created_at"])
            else:
                conn.execute("DELETE FROM current_labels WHERE sha256 = ?", (sha,))
            queue = self._row("SELECT state FROM queue WHERE sha256 = ?", (sha,))
            expires = None
            if previous is None and queue and queue["state"] == "labelled":
                expires = iso(now + _dt.timedelta(seconds=self.lease_seconds or DEFAULT_LEASE_SECONDS))
                conn.execute("UPDATE queue SET state = 'leased', lease_reviewer = ?, lease_expires_at = ? "
                             "WHERE sha256 = ?", (reviewer, expires, sha))
            self._event(sha, "undone", reviewer, now_s, lease_expires_at=expires, detail=ev["label"])
            return {
                "undo_event_id": int(cur.lastrowid),
                "undone": ev,
                "current_label": self._row("SELECT label, reviewer, labelled_at FROM current_labels WHERE sha256 = ?",
                                           (sha,)),
                "queue_state": (self._row("SELECT state FROM queue WHERE sha256 = ?", (sha,)) or {}).get("state"),
                "lease_expires_at": expires,
            }

    def label_history(self, *, reviewer: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Latest label and undo events first (the audit trail), optionally for one reviewer."""
        sql, params = "SELECT * FROM label_events", []
        if reviewer:
            sql += " WHERE reviewer = ?"
            params.append(check_reviewer(reviewer))
        with self._read():
            return self._rows(sql + " ORDER BY id DESC LIMIT ?", (*params, int(limit)))

    def labelled_items(self, filters: Mapping[str, Any] | None = None, *, limit: int | None = 100,
                       offset: int = 0, **kwargs: Any) -> list[dict[str, Any]]:
        """Items with a label in force matching ``filters`` (see :class:`LabelFilters`), oldest label first."""
        sql, params = LabelFilters.make(filters, **kwargs).sql()
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [int(limit), int(offset)]
        with self._read():
            return self._rows(sql, tuple(params))

    def reviewers(self) -> list[str]:
        with self._read():
            return [r[0] for r in self.conn.execute("SELECT DISTINCT reviewer FROM label_events ORDER BY reviewer")]

    def _set_current(self, sha: str, event_id: int, label: str, reviewer: str, at: str) -> None:
        self.conn.execute(
            "INSERT INTO current_labels (sha256, event_id, label, reviewer, labelled_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(sha256) DO UPDATE SET event_id = excluded.event_id, label = excluded.label, "
            "reviewer = excluded.reviewer, labelled_at = excluded.labelled_at",
            (sha, event_id, label, reviewer, at))


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} minutes" if seconds >= 60 else f"{seconds:g} seconds"

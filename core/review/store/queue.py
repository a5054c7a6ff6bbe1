"""The review queue: uncertainty-first claims under expiring leases.

Order: items skipped fewer times first (``round``), then closest to the
decision boundary (``distance = |p - 0.5|`` of the latest scoring; unscored
hand-queued items count as 0.5), then oldest. A claim runs in one
``BEGIN IMMEDIATE`` transaction — return expired leases to the queue, pick
the first queued item, lease it — so two reviewers can never hold the same
item, and an abandoned item comes back when its lease runs out.
"""
from __future__ import annotations

import datetime as _dt
from typing import Any

from core.review.store.base import StoreError, iso
from core.review.store.items import ItemsMixin, _scoring_out, check_sha256

QUEUE_STATES = ("queued", "leased", "labelled")
#: Longest lease a caller may ask for.
MAX_LEASE_SECONDS = 24 * 3600.0
MAX_REVIEWER = 100


def check_reviewer(reviewer: str) -> str:
    name = str(reviewer or "").strip()
    if not name:
        raise StoreError("A reviewer name is required.")
    if len(name) > MAX_REVIEWER:
        raise StoreError(f"Reviewer names are limited to {MAX_REVIEWER} characters.")
    return name


class QueueMixin(ItemsMixin):
    lease_seconds: float

    # -- adding ----------------------------------------------------------
    def enqueue(self, sha256: str, *, by: str | None = None, reason: str = "manual") -> dict[str, Any]:
        """Queue any stored item by hand (a labelled item is queued again for a second look).

        Idempotent: an item already queued or leased is left as it is.
        """
        sha = check_sha256(sha256)
        reason = (reason or "manual").strip() or "manual"
        with self._write() as conn:
            self._need_item(sha)
            row = self._row("SELECT state FROM queue WHERE sha256 = ?", (sha,))
            now = self.now_iso()
            if row is None:
                self._insert_queued(sha, now, by=by, reason=reason)
            elif row["state"] == "labelled":
                conn.execute(
                    "UPDATE queue SET state = 'queued', round = 0, ready_at = ?, enqueued_at = ?, enqueued_by = ?, "
                    "reason = ? WHERE sha256 = ?", (now, now, by, reason, sha))
                self._event(sha, "enqueued", by, now, detail=reason)
            return self._row("SELECT * FROM queue WHERE sha256 = ?", (sha,))

    def _insert_queued(self, sha: str, now: str, *, by: str | None, reason: str) -> None:
        scoring = self._latest_scoring_row(sha)
        distance = abs(scoring["probability"] - 0.5) if scoring else 0.5
        self.conn.execute(
            "INSERT INTO queue (sha256, state, distance, round, ready_at, enqueued_at, enqueued_by, reason) "
            "VALUES (?, 'queued', ?, 0, ?, ?, ?, ?)", (sha, distance, now, now, by, reason))
        self._event(sha, "enqueued", by, now, detail=reason)

    def _after_scoring(self, sha: str, distance: float, *, queue_it: bool) -> None:
        row = self._row("SELECT state FROM queue WHERE sha256 = ?", (sha,))
        if row is not None:
            if row["state"] != "labelled":
                self.conn.execute("UPDATE queue SET distance = ? WHERE sha256 = ?", (distance, sha))
            return
        if queue_it and self.conn.execute("SELECT 1 FROM current_labels WHERE sha256 = ?", (sha,)).fetchone() is None:
            self._insert_queued(sha, self.now_iso(), by=None, reason="review tier")

    # -- claiming --------------------------------------------------------
    def claim_next(self, reviewer: str, lease_seconds: float | None = None) -> dict[str, Any] | None:
        """Lease the most uncertain queued item to ``reviewer``; None when the queue is empty."""
        reviewer = check_reviewer(reviewer)
        lease = self._lease_length(lease_seconds)
        with self._write() as conn:
            now = self.now()
            self._expire_leases(iso(now))
            # INDEXED BY: the planner would otherwise pick queue_state and sort every queued row.
            row = conn.execute(
                "SELECT sha256 FROM queue INDEXED BY queue_next WHERE state = 'queued' "
                "ORDER BY round, distance, ready_at, sha256 LIMIT 1").fetchone()
            if row is None:
                return None
            sha, expires = row[0], iso(now + _dt.timedelta(seconds=lease))
            conn.execute("UPDATE queue SET state = 'leased', lease_reviewer = ?, lease_expires_at = ? "
                         "WHERE sha256 = ?", (reviewer, expires, sha))
            self._event(sha, "claimed", reviewer, iso(now), lease_expires_at=expires)
            return self._queue_item(sha)

    def renew_lease(self, sha256: str, reviewer: str, lease_seconds: float | None = None) -> str:
        """Extend one's own lease; returns the new expiry."""
        sha, reviewer = check_sha256(sha256), check_reviewer(reviewer)
        lease = self._lease_length(lease_seconds)
        with self._write() as conn:
            self._need_lease(sha, reviewer)
            now = self.now()
            expires = iso(now + _dt.timedelta(seconds=lease))
            conn.execute("UPDATE queue SET lease_expires_at = ? WHERE sha256 = ?", (expires, sha))
            self._event(sha, "renewed", reviewer, iso(now), lease_expires_at=expires)
            return expires

    def release(self, sha256: str, reviewer: str) -> None:
        """Give a leased item back; it keeps its place in the queue."""
        sha, reviewer = check_sha256(sha256), check_reviewer(reviewer)
        with self._write() as conn:
            self._need_lease(sha, reviewer)
            conn.execute("UPDATE queue SET state = 'queued', lease_reviewer = NULL, lease_expires_at = NULL "
                         "WHERE sha256 = ?", (sha,))
            self._event(sha, "released", reviewer, self.now_iso())

    def skip(self, sha256: str, reviewer: str) -> None:
        """Send an item to the back of the queue (behind every item not yet skipped as often)."""
        sha, reviewer = check_sha256(sha256), check_reviewer(reviewer)
        with self._write() as conn:
            self._need_item(sha)
            row = self._row("SELECT state, round FROM queue WHERE sha256 = ?", (sha,))
            if row is None or row["state"] == "labelled":
                raise StoreError(f"Item {sha[:12]}… is not in the review queue.")
            if row["state"] == "leased":
                self._need_lease(sha, reviewer)
            last = conn.execute("SELECT round FROM queue INDEXED BY queue_next WHERE state = 'queued' "
                                "ORDER BY round DESC LIMIT 1").fetchone()
            new_round = max(int(last[0]) if last else 0, int(row["round"])) + 1
            now = self.now_iso()
            conn.execute("UPDATE queue SET state = 'queued', round = ?, ready_at = ?, lease_reviewer = NULL, "
                         "lease_expires_at = NULL WHERE sha256 = ?", (new_round, now, sha))
            self._event(sha, "skipped", reviewer, now)

    # -- reading ---------------------------------------------------------
    def queue_stats(self) -> dict[str, int]:
        """Counts per queue state; a lease that has run out counts as queued."""
        now = self.now_iso()
        with self._read():
            counts = {s: 0 for s in QUEUE_STATES}
            for state, n in self.conn.execute("SELECT state, count(*) FROM queue GROUP BY state"):
                counts[state] = int(n)
            expired = self.conn.execute("SELECT count(*) FROM queue WHERE state = 'leased' AND lease_expires_at <= ?",
                                        (now,)).fetchone()[0]
        counts["leased"] -= int(expired)
        counts["queued"] += int(expired)
        return counts

    def queue_items(self, limit: int = 50, *, state: str | None = None) -> list[dict[str, Any]]:
        """Queue rows with name and latest score: leased ones, then queued ones in claim order.

        ``state`` narrows to one state (``labelled`` lists the most recently enqueued first).
        """
        if state is not None and state not in QUEUE_STATES:
            raise StoreError(f"Unknown queue state {state!r}; expected one of {', '.join(QUEUE_STATES)}.")
        select = ("SELECT q.*, i.name, s.probability, s.tier, s.logit FROM queue {hint} "
                  "JOIN items i ON i.sha256 = q.sha256 "
                  "LEFT JOIN scorings s ON s.id = (SELECT max(id) FROM scorings WHERE sha256 = q.sha256) "
                  "WHERE q.state = '{state}' ORDER BY {order} LIMIT ?")  # literal: partial indexes need it
        orders = {"leased": ("q INDEXED BY queue_leases", "q.lease_expires_at"),
                  "queued": ("q INDEXED BY queue_next", "q.round, q.distance, q.ready_at, q.sha256"),
                  "labelled": ("q", "q.enqueued_at DESC")}
        out: list[dict[str, Any]] = []
        with self._read():
            for st in ([state] if state else ["leased", "queued"]):
                if len(out) >= limit:
                    break
                hint, order = orders[st]
                out += self._rows(select.format(hint=hint, state=st, order=order), (int(limit) - len(out),))
        return out

    def leases(self, reviewer: str | None = None) -> list[dict[str, Any]]:
        """Active (unexpired) leases, e.g. to resume one's own item after a page reload."""
        sql = "SELECT * FROM queue WHERE state = 'leased' AND lease_expires_at > ?"
        params: list[Any] = [self.now_iso()]
        if reviewer is not None:
            sql += " AND lease_reviewer = ?"
            params.append(check_reviewer(reviewer))
        with self._read():
            return self._rows(sql + " ORDER BY lease_expires_at", tuple(params))

    # -- helpers ---------------------------------------------------------
    def _lease_length(self, lease_seconds: float | None) -> float:
        value = self.lease_seconds if lease_seconds is None else float(lease_seconds)
        if not (0 < value <= MAX_LEASE_SECONDS):
            raise StoreError(f"Lease length must be between 0 and {int(MAX_LEASE_SECONDS)} seconds.")
        return value

    def _expire_leases(self, now: str) -> None:
        expired = self.conn.execute(
            "SELECT sha256, lease_reviewer, lease_expires_at FROM queue INDEXED BY queue_leases "
            "WHERE state = 'leased' AND lease_expires_at <= ?", (now,)).fetchall()
        for sha, reviewer, was in expired:
            self.conn.execute("UPDATE queue SET state = 'queued', lease_reviewer = NULL, lease_expires_at = NULL "
                              "WHERE sha256 = ?", (sha,))
            self._event(sha, "expired", reviewer, now, lease_expires_at=was)

    def _need_lease(self, sha: str, reviewer: str) -> None:
        """Refuse unless ``reviewer`` holds the lease (an expired lease nobody took over still counts)."""
        self._need_item(sha)
        row = self._row("SELECT state, lease_reviewer, lease_expires_at FROM queue WHERE sha256 = ?", (sha,))
        if row is None or row["state"] != "leased":
            raise StoreError(f"Item {sha[:12]}… is not leased to {reviewer}; claim it first.")
        if row["lease_reviewer"] != reviewer:
            raise StoreError(f"Item {sha[:12]}… is leased to {row['lease_reviewer']} "
                             f"until {row['lease_expires_at']}.")

    def _event(self, sha: str, event: str, actor: str | None, at: str, *, lease_expires_at: str | None = None,
               detail: str | None = None) -> None:
        self.conn.execute("INSERT INTO queue_events (sha256, event, actor, at, lease_expires_at, detail) "
                          "VALUES (?, ?, ?, ?, ?, ?)", (sha, event, actor, at, lease_expires_at, detail))

    def _queue_item(self, sha: str) -> dict[str, Any]:
        """The claimed item as handed to a reviewer: facts, queue row, latest scoring, current label."""
        out = self._need_item(sha)
        queue = self._row("SELECT state, distance, round, enqueued_at, enqueued_by, reason, lease_reviewer, "
                          "lease_expires_at FROM queue WHERE sha256 = ?", (sha,)) or {}
        out.update(queue)
        out["scoring"] = _scoring_out(self._latest_scoring_row(sha))
        out["current_label"] = self._row("SELECT label, reviewer, labelled_at FROM current_labels WHERE sha256 = ?",
                                         (sha,))
        return out

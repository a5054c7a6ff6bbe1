"""Owner of ``queue`` and ``queue_events``: uncertainty-first claims under expiring leases.

The only writer of both tables. Order: items skipped fewer times first
(``round``), then closest to the decision boundary (:func:`priority`, the
``|p - 0.5|`` of the latest scoring, recomputed by :meth:`QueueOwner.reprioritise`
with the active model's probability whenever a new model version becomes
active; unscored hand-queued items count as 0.5), then oldest. Items queued for
another reason (a stability flip, a second review, a manual send) keep the
priority they were queued with. Leases follow Label Studio's ``TaskLock`` shape:
:meth:`QueueOwner.set_lock`, :meth:`~QueueOwner.release_lock`,
:meth:`~QueueOwner.clear_expired_locks`, and one rule, :func:`lease_rule`,
decides who may act on a leased item.

A claim is one write transaction — return expired leases to the queue, pick
the first queued item, lease it — so two reviewers can never hold the same
item: SQLite admits one writer at a time (``BEGIN IMMEDIATE``); PostgreSQL
locks the picked row with ``FOR UPDATE SKIP LOCKED``, so concurrent claims
take different items without waiting on each other.
"""
from __future__ import annotations

import datetime as _dt
from typing import Any

import sqlalchemy as sa

from core.review.store.base import StoreError, iso
from core.review.store.db import Database
from core.review.store.tables import queue, queue_events, queue_exclusions

QUEUE_STATES = ("queued", "leased", "labelled")
#: Review stages an item passes through under blind double review.
STAGES = ("first", "second", "adjudication")
#: Longest lease a caller may ask for.
MAX_LEASE_SECONDS = 24 * 3600.0
MAX_REVIEWER = 100
#: Literal (not a bound parameter) so SQLite can use the partial indexes on ``state``.
_QUEUED, _LEASED = sa.literal_column("'queued'"), sa.literal_column("'leased'")
#: Queue reasons whose place is the model's uncertainty (the others keep their own place rules).
UNCERTAINTY_REASONS = ("review tier", "labelled directly")
#: Claim order, written once (the ``queue_next`` index has exactly these columns).
CLAIM_ORDER = (queue.c.round, queue.c.distance, queue.c.ready_at, queue.c.sha256)


def priority(probability: float | None) -> float:
    """Distance to the decision boundary, ``|p - 0.5|``: smaller is claimed first (unscored: 0.5)."""
    return 0.5 if probability is None else abs(float(probability) - 0.5)


def check_reviewer(reviewer: str) -> str:
    name = str(reviewer or "").strip()
    if not name:
        raise StoreError("A reviewer name is required.")
    if len(name) > MAX_REVIEWER:
        raise StoreError(f"Reviewer names are limited to {MAX_REVIEWER} characters.")
    return name


def lease_rule(row: dict[str, Any] | None, sha: str, reviewer: str, now: str, *, must_hold: bool) -> bool:
    """Who may act on an item, decided once; returns True when another reviewer's lease has run out.

    The holder may always act (an expired lease nobody took over still counts).
    With ``must_hold`` (renew, release, skip of a leased item) only the holder
    may. Otherwise (labelling) anyone may act on an item that is not leased or
    whose lease has expired; an unexpired lease of someone else is refused.
    """
    leased = row is not None and row["state"] == "leased"
    if leased and row["lease_reviewer"] == reviewer:
        return False
    if must_hold:
        if not leased:
            raise StoreError(f"Item {sha[:12]}… is not leased to {reviewer}; claim it first.")
        raise StoreError(f"Item {sha[:12]}… is leased to {row['lease_reviewer']} until {row['lease_expires_at']}.")
    if leased:
        if row["lease_expires_at"] > now:
            raise StoreError(f"Item {sha[:12]}… is leased to {row['lease_reviewer']} until "
                             f"{row['lease_expires_at']}; it cannot be labelled by {reviewer} now.")
        return True
    return False


def claim_reason(row: dict[str, Any], expired_from: str | None, probability: float | None) -> str:
    """Why the claim picked this item, in words for the reviewer (e.g. ``most uncertain: p=0.51``)."""
    automatic = row["reason"] in UNCERTAINTY_REASONS
    if row.get("model_p") is not None:
        probability = float(row["model_p"])  # the active model's, recomputed at its activation
    if not automatic:
        why = f"queued by {row['enqueued_by']}: {row['reason']}" if row["enqueued_by"] else f"queued: {row['reason']}"
    elif probability is not None:
        why = f"the model is least sure of this one (p = {probability:.2f})"
    else:
        why = "queued without a score"
    if row["round"]:
        why += f"; skipped {row['round']}× before"
    if expired_from:
        why = f"lease expired ({expired_from} did not finish); {why}"
    return why


class QueueOwner:
    """The queue table, its event log and the lease rule on one :class:`Database`."""

    def __init__(self, db: Database, lease_seconds: float) -> None:
        self.db, self.lease_seconds = db, lease_seconds

    # -- rows --------------------------------------------------------------
    def row(self, sha: str, *, lock: bool = False) -> dict[str, Any] | None:
        """The item's queue row; ``lock`` holds it until the transaction ends (PostgreSQL ``FOR UPDATE``)."""
        q = sa.select(queue).where(queue.c.sha256 == sha)
        return self.db.row(q.with_for_update() if lock else q)

    def state(self, sha: str) -> str | None:
        return self.db.scalar(sa.select(queue.c.state).where(queue.c.sha256 == sha))

    def events(self, sha: str) -> list[dict[str, Any]]:
        e = queue_events.c
        return self.db.rows(sa.select(e.event, e.actor, e.at, e.lease_expires_at, e.detail)
                            .where(e.sha256 == sha).order_by(e.id))

    def _event(self, sha: str, event: str, actor: str | None, at: str, *, lease_expires_at: str | None = None,
               detail: str | None = None) -> None:
        self.db.execute(queue_events.insert().values(sha256=sha, event=event, actor=actor, at=at,
                                                     lease_expires_at=lease_expires_at, detail=detail))

    def _set(self, sha: str, **values: Any) -> None:
        self.db.execute(queue.update().where(queue.c.sha256 == sha).values(**values))

    # -- locks (TaskLock shape) -------------------------------------------
    def lease_length(self, lease_seconds: float | None) -> float:
        value = self.lease_seconds if lease_seconds is None else float(lease_seconds)
        if not (0 < value <= MAX_LEASE_SECONDS):
            raise StoreError(f"Lease length must be between 0 and {int(MAX_LEASE_SECONDS)} seconds.")
        return value

    def set_lock(self, sha: str, reviewer: str, now: _dt.datetime, seconds: float, *, event: str) -> str:
        """Lease (or re-lease) the item to ``reviewer`` for ``seconds``; returns the expiry."""
        expires = iso(now + _dt.timedelta(seconds=seconds))
        self._set(sha, state="leased", lease_reviewer=reviewer, lease_expires_at=expires)
        self._event(sha, event, reviewer, iso(now), lease_expires_at=expires)
        return expires

    def release_lock(self, sha: str, actor: str | None, at: str, *, event: str, **values: Any) -> None:
        """Back to ``queued`` (``values`` may move it, e.g. a skip's new round)."""
        self._set(sha, state="queued", lease_reviewer=None, lease_expires_at=None, **values)
        self._event(sha, event, actor, at)

    def clear_expired_locks(self, now: str) -> dict[str, str]:
        """Return every run-out lease to the queue; ``{sha256: former holder}``.

        PostgreSQL: ``SKIP LOCKED``, so each expired lease is returned by exactly one claim.
        """
        q = queue.c
        expired = self.db.rows(sa.select(q.sha256, q.lease_reviewer, q.lease_expires_at)
                               .where(q.state == _LEASED, q.lease_expires_at <= now)
                               .with_for_update(skip_locked=True))
        for r in expired:
            self._set(r["sha256"], state="queued", lease_reviewer=None, lease_expires_at=None)
            self._event(r["sha256"], "expired", r["lease_reviewer"], now, lease_expires_at=r["lease_expires_at"])
        return {r["sha256"]: r["lease_reviewer"] for r in expired}

    # -- adding ------------------------------------------------------------
    def _insert(self, sha: str, now: str, *, state: str, probability: float | None, by: str | None,
                reason: str) -> None:
        self.db.execute(queue.insert().values(sha256=sha, state=state, distance=priority(probability), round=0,
                                              ready_at=now, enqueued_at=now, enqueued_by=by, reason=reason,
                                              model_p=None if probability is None else float(probability)))

    def enqueue(self, sha: str, probability: float | None, *, by: str | None, reason: str) -> dict[str, Any]:
        """Queue an item by hand (a labelled one again, for a second look); idempotent otherwise."""
        row = self.row(sha, lock=True)
        now = self.db.now_iso()
        if row is None:
            self._insert(sha, now, state="queued", probability=probability, by=by, reason=reason)
            self._event(sha, "enqueued", by, now, detail=reason)
        elif row["state"] == "labelled":
            self._set(sha, state="queued", round=0, ready_at=now, enqueued_at=now, enqueued_by=by, reason=reason)
            self._event(sha, "enqueued", by, now, detail=reason)
        return self.row(sha)

    def after_scoring(self, sha: str, probability: float, *, queue_it: bool) -> None:
        """A new scoring moves a waiting item's priority; ``queue_it`` queues an item not yet in the queue."""
        state = self.state(sha)
        if state is not None:
            if state != "labelled":
                self._set(sha, distance=priority(probability), model_p=float(probability))
            return
        if queue_it:
            now = self.db.now_iso()
            self._insert(sha, now, state="queued", probability=probability, by=None, reason="review tier")
            self._event(sha, "enqueued", None, now, detail="review tier")

    def waiting_for_uncertainty(self) -> list[str]:
        """Items waiting (queued or leased) whose place is the model's uncertainty, in no order."""
        q = queue.c
        return [r["sha256"] for r in self.db.rows(sa.select(q.sha256).where(
            q.state != "labelled", q.reason.in_(UNCERTAINTY_REASONS), q.stage == "first"))]

    def reprioritise(self, probabilities: dict[str, float]) -> int:
        """Give each waiting item its place by the active model's probability ``p`` (``|p - 0.5|``).

        Only items whose place is the uncertainty (:data:`UNCERTAINTY_REASONS`, first review) move;
        the others, and labelled items, are left as they are. Returns how many rows changed."""
        q = queue.c
        changed = 0
        for sha, p in probabilities.items():
            done = self.db.execute(queue.update().where(q.sha256 == sha, q.state != "labelled",
                                                        q.reason.in_(UNCERTAINTY_REASONS), q.stage == "first")
                                   .values(distance=priority(p), model_p=float(p)))
            changed += int(done.rowcount or 0)
        return changed

    # -- claiming ------------------------------------------------------------
    def claim(self, reviewer: str, lease_seconds: float | None) -> tuple[dict[str, Any], str | None] | None:
        """Lease the next item to ``reviewer``: ``(its queue row before the claim, former holder if its lease
        had run out)``, or None when the queue is empty."""
        lease = self.lease_length(lease_seconds)
        now = self.db.now()
        expired = self.clear_expired_locks(iso(now))
        x = queue_exclusions.c
        not_excluded = ~sa.exists().where(x.sha256 == queue.c.sha256, x.reviewer == reviewer)
        row = self.db.row(sa.select(queue).where(queue.c.state == _QUEUED, not_excluded).order_by(*CLAIM_ORDER)
                          .limit(1).with_for_update(skip_locked=True))
        if row is None:
            return None
        self.set_lock(row["sha256"], reviewer, now, lease, event="claimed")
        return row, expired.get(row["sha256"])

    def renew(self, sha: str, reviewer: str, lease_seconds: float | None) -> str:
        lease = self.lease_length(lease_seconds)
        now = self.db.now()
        lease_rule(self.row(sha, lock=True), sha, reviewer, iso(now), must_hold=True)
        return self.set_lock(sha, reviewer, now, lease, event="renewed")

    def release(self, sha: str, reviewer: str) -> None:
        now = self.db.now_iso()
        lease_rule(self.row(sha, lock=True), sha, reviewer, now, must_hold=True)
        self.release_lock(sha, reviewer, now, event="released")

    def skip(self, sha: str, reviewer: str) -> None:
        row = self.row(sha, lock=True)
        if row is None or row["state"] == "labelled":
            raise StoreError(f"Item {sha[:12]}… is not in the review queue.")
        now = self.db.now_iso()
        if row["state"] == "leased":
            lease_rule(row, sha, reviewer, now, must_hold=True)
        last = self.db.scalar(sa.select(queue.c.round).where(queue.c.state == _QUEUED)
                              .order_by(queue.c.round.desc()).limit(1))
        new_round = max(int(last or 0), int(row["round"])) + 1
        self.release_lock(sha, reviewer, now, event="skipped", round=new_round, ready_at=now)

    # -- the label and undo side of the loop ----------------------------------
    def before_label(self, sha: str, reviewer: str, now: str) -> dict[str, Any] | None:
        """Apply the lease rule for a label by ``reviewer``; a run-out lease of another is logged as expired."""
        row = self.row(sha, lock=True)
        if lease_rule(row, sha, reviewer, now, must_hold=False):
            self._event(sha, "expired", row["lease_reviewer"], now, lease_expires_at=row["lease_expires_at"])
        return row

    def after_label(self, sha: str, reviewer: str, label: str, now: str, *, row: dict[str, Any] | None,
                    probability: float | None, next_stage: str | None = None, reason: str | None = None) -> None:
        """The item leaves the queue, or (``next_stage``) waits for its next, blind review stage.

        Labelled outside the queue ("label now") it gets a row but no inflow event. Moving to a
        later stage excludes ``reviewer`` from claiming it again, so that stage is independent.
        """
        if row is None:
            self._insert(sha, now, state="labelled", probability=probability, by=reviewer, reason="labelled directly")
        else:
            self._set(sha, state="labelled", lease_reviewer=None, lease_expires_at=None)
        self._event(sha, "labelled", reviewer, now, detail=label)
        if next_stage is not None:
            self.db.insert_ignore(queue_exclusions, {"sha256": sha, "reviewer": reviewer}, keys=("sha256", "reviewer"))
            self._set(sha, state="queued", stage=next_stage, round=0, ready_at=now, enqueued_at=now, enqueued_by=None,
                      reason=reason or f"{next_stage} review")
            self._event(sha, "enqueued", None, now, detail=reason or f"{next_stage} review")

    def after_undo(self, sha: str, reviewer: str, undone_label: str, now: _dt.datetime, *,
                   still_labelled: bool, stage: str | None = None) -> str | None:
        """Log the undo; the item is leased back to the reviewer when nothing is left to stand for it.

        Under double review (``stage``: the stage the undone label was given at) the item returns to
        that stage, leased to the reviewer who undid, who may claim it again. Returns the lease's expiry.
        """
        row = self.row(sha, lock=True)
        expires = None
        back_to_stage = stage is not None and row is not None and row["stage"] != stage
        if back_to_stage and row["state"] == "leased" and row["lease_reviewer"] != reviewer \
                and row["lease_expires_at"] > iso(now):
            raise StoreError(f"Cannot undo: {row['lease_reviewer']} is reviewing item {sha[:12]}… for its "
                             f"{row['stage']} review right now.")
        if back_to_stage or (not still_labelled and row is not None and row["state"] == "labelled"):
            expires = iso(now + _dt.timedelta(seconds=self.lease_seconds))
            values: dict[str, Any] = {"state": "leased", "lease_reviewer": reviewer, "lease_expires_at": expires}
            if back_to_stage:
                values["stage"] = stage
                self.db.execute(queue_exclusions.delete().where(queue_exclusions.c.sha256 == sha,
                                                                queue_exclusions.c.reviewer == reviewer))
            self._set(sha, **values)
        self._event(sha, "undone", reviewer, iso(now), lease_expires_at=expires, detail=undone_label)
        return expires

    def excluded(self, sha: str) -> list[str]:
        """Reviewers who may not take this item's current review stage."""
        x = queue_exclusions.c
        return [r["reviewer"] for r in self.db.rows(sa.select(x.reviewer).where(x.sha256 == sha).order_by(x.reviewer))]

    # -- reading ---------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Counts per queue state; a lease that has run out counts as queued."""
        now = self.db.now_iso()
        with self.db.read():
            counts = {s: 0 for s in QUEUE_STATES}
            for r in self.db.rows(sa.select(queue.c.state, sa.func.count().label("n")).group_by(queue.c.state)):
                counts[r["state"]] = int(r["n"])
            expired = self.db.scalar(sa.select(sa.func.count()).select_from(queue)
                                     .where(queue.c.state == _LEASED, queue.c.lease_expires_at <= now))
        counts["leased"] -= int(expired)
        counts["queued"] += int(expired)
        return counts

    def leases(self, reviewer: str | None = None) -> list[dict[str, Any]]:
        """Active (unexpired) leases, e.g. to resume one's own item after a page reload."""
        q = sa.select(queue).where(queue.c.state == _LEASED, queue.c.lease_expires_at > self.db.now_iso())
        if reviewer is not None:
            q = q.where(queue.c.lease_reviewer == check_reviewer(reviewer))
        return self.db.rows(q.order_by(queue.c.lease_expires_at))

"""Owner of ``label_events`` and ``current_labels``: decisions as an append-only history.

A label is an event; undo is another event pointing at the one it cancels,
so nothing an analyst decided is ever overwritten. ``current_labels`` is a
derived table (the latest label event not undone) kept in the same
transaction, so exports and lists never replay the history.

Concurrent edits: an item's *label version* is the number of label and undo
events it has. A writer that passes the version it saw (``expected_version``)
is refused if someone else decided meanwhile, so a second reviewer can never
silently overwrite the first. Writers on one item are serialised
(:meth:`Database.lock`), so the check and the write are one step.
"""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import sqlalchemy as sa

from core.review.store.base import LABELS, StoreError, iso, parse_time
from core.review.store.db import Database
from core.review.store.tables import current_labels, label_events

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


def check_label(label: str) -> str:
    if label not in LABELS:
        raise StoreError(f"Unknown label {label!r}; expected one of {', '.join(LABELS)}.")
    return label


def check_note(note: str | None) -> str | None:
    return (note or "").strip()[:MAX_NOTE] or None


def check_seconds(seconds_spent: float | None) -> float | None:
    if seconds_spent is None:
        return None
    try:
        value = float(seconds_spent)
    except (TypeError, ValueError):
        raise StoreError("seconds_spent must be a non-negative number.") from None
    if not math.isfinite(value) or value < 0:
        raise StoreError("seconds_spent must be a non-negative number.")
    return value


_E = label_events.c


def _not_undone() -> sa.ColumnElement[bool]:
    u = label_events.alias("u")
    return ~sa.exists().where(u.c.undoes == _E.id)


class LabelsOwner:
    """Label and undo events and the label in force, on one :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- concurrency ------------------------------------------------------
    def lock(self, sha: str) -> None:
        """Serialise label writers on this item until the transaction ends."""
        self.db.lock(f"labels:{sha}")

    def version(self, sha: str) -> int:
        """How many label and undo events the item has: changes with every decision on it."""
        return int(self.db.scalar(sa.select(sa.func.count()).select_from(label_events).where(_E.sha256 == sha)))

    def check_version(self, sha: str, expected: int) -> None:
        found = self.version(sha)
        if int(expected) != found:
            last = self.db.row(sa.select(_E.reviewer, _E.created_at, _E.kind).where(_E.sha256 == sha)
                               .order_by(_E.id.desc()).limit(1))
            who = f" by {last['reviewer']} at {last['created_at']}" if last else ""
            raise StoreError(f"Item {sha[:12]}… was changed{who} since you opened it (label version {found}, "
                             f"you saw {int(expected)}); nothing was saved. Reload it to see the current label.")

    def count_labels(self) -> int:
        """How many label events (not undos) were ever given: grows by one with every decision."""
        return int(self.db.scalar(sa.select(sa.func.count()).select_from(label_events).where(_E.kind == "label")))

    # -- writes ------------------------------------------------------------
    def add(self, sha: str, label: str, reviewer: str, now: str, *, note: str | None, seconds_spent: float | None,
            scoring_id: int | None, authenticated: bool, stage: str = "first") -> dict[str, Any]:
        event_id = int(self.db.scalar(label_events.insert().values(
            sha256=sha, kind="label", label=label, reviewer=reviewer, created_at=now, note=note,
            seconds_spent=seconds_spent, scoring_id=scoring_id, authenticated=bool(authenticated), stage=stage,
        ).returning(_E.id)))
        self._set_current(sha, event_id, label, reviewer, now)
        return self.event(event_id)

    def latest_undoable(self, reviewer: str) -> dict[str, Any] | None:
        """The reviewer's latest label that no undo cancelled yet."""
        return self.db.row(sa.select(label_events).where(_E.reviewer == reviewer, _E.kind == "label", _not_undone())
                           .order_by(_E.id.desc()).limit(1))

    def undo(self, event: dict[str, Any], reviewer: str, now: str) -> tuple[int, dict[str, Any] | None]:
        """Cancel ``event`` with a new undo event; the previous label (if any) comes back into force.

        Refused when someone labelled the item again after ``event``. Returns
        ``(undo event id, label now in force or None)``.
        """
        sha = event["sha256"]
        later = self.db.row(sa.select(_E.reviewer, _E.created_at)
                            .where(_E.sha256 == sha, _E.id > event["id"], _E.kind == "label", _not_undone())
                            .order_by(_E.id.desc()).limit(1))
        if later is not None:
            raise StoreError(f"Cannot undo: item {sha[:12]}… was labelled again by {later['reviewer']} "
                             f"at {later['created_at']}.")
        undo_id = int(self.db.scalar(label_events.insert().values(
            sha256=sha, kind="undo", undoes=event["id"], reviewer=reviewer, created_at=now,
            authenticated=bool(event.get("authenticated")),
        ).returning(_E.id)))
        previous = self.db.row(sa.select(_E.id, _E.label, _E.reviewer, _E.created_at)
                               .where(_E.sha256 == sha, _E.kind == "label", _not_undone())
                               .order_by(_E.id.desc()).limit(1))
        if previous:
            self._set_current(sha, previous["id"], previous["label"], previous["reviewer"], previous["created_at"])
        else:
            self.db.execute(current_labels.delete().where(current_labels.c.sha256 == sha))
        return undo_id, self.current(sha)

    def _set_current(self, sha: str, event_id: int, label: str, reviewer: str, at: str) -> None:
        self.db.upsert(current_labels, {"sha256": sha, "event_id": event_id, "label": label, "reviewer": reviewer,
                                        "labelled_at": at}, keys=("sha256",))

    # -- reads ---------------------------------------------------------------
    def event(self, event_id: int) -> dict[str, Any] | None:
        return self.db.row(sa.select(label_events).where(_E.id == event_id))

    def events(self, sha: str) -> list[dict[str, Any]]:
        return self.db.rows(sa.select(label_events).where(_E.sha256 == sha).order_by(_E.id))

    def current(self, sha: str, *, detail: bool = False) -> dict[str, Any] | None:
        """The label in force (``detail``: with its event id, note, time spent and sign-in) or None."""
        c = current_labels.c
        cols = [c.label, c.reviewer, c.labelled_at]
        if detail:
            cols += [c.event_id, _E.note, _E.seconds_spent, _E.authenticated]
        q = sa.select(*cols).select_from(current_labels.join(label_events, _E.id == c.event_id)).where(c.sha256 == sha)
        return self.db.row(q)

    def in_force(self, sha: str) -> list[dict[str, Any]]:
        """The item's label events that no undo cancelled, oldest first (with their review stage)."""
        return self.db.rows(sa.select(_E.id, _E.label, _E.reviewer, _E.stage, _E.created_at)
                            .where(_E.sha256 == sha, _E.kind == "label", _not_undone()).order_by(_E.id))

    def stream(self) -> list[dict[str, Any]]:
        """Every label in force on every item, oldest first: what agreement statistics read."""
        return self.db.rows(sa.select(_E.sha256, _E.reviewer, _E.label, _E.stage, _E.created_at)
                            .where(_E.kind == "label", _not_undone()).order_by(_E.id))

    def reviewers(self) -> list[str]:
        return [r["reviewer"] for r in self.db.rows(sa.select(_E.reviewer).distinct().order_by(_E.reviewer))]


def minutes(seconds: float) -> str:
    return f"{seconds / 60:g} minutes" if seconds >= 60 else f"{seconds:g} seconds"


def undo_cutoff(now: _dt.datetime, window: float) -> str:
    """Oldest label time an undo may still cancel."""
    return iso(now - _dt.timedelta(seconds=window))

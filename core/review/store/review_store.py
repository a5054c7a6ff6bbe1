"""``ReviewStore``: the one object the CLI, the dashboard and batch jobs talk to.

It holds the connection and the transaction (:class:`Database`) and composes
the owners, each the only SQL that touches its tables: :class:`ItemsOwner`
(items, uploads, scorings), :class:`QueueOwner` (queue, queue events),
:class:`LabelsOwner` (label events, current labels), :class:`ExportsOwner`
(export records), :class:`JobsOwner` (background job leases) and the read-only :class:`Monitor`. A method that spans
owners (a scoring that queues its item, a label that leaves the queue) runs
them in one transaction here. The database is an embedded SQLite file by
default or PostgreSQL given a URL; the image bytes live in a content-addressed
folder beside the file or wherever ``image_dir`` / ``$LADEDA_IMAGE_DIR`` says,
which several replicas can share.

Privacy mode is sticky per database: once opened with ``privacy_mode=True``
every later opener keeps storing thumbnails only, so a script that forgets the
flag cannot start keeping originals.
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import sqlalchemy as sa

from core.review.agreement import (agreement_state, pair_agreements, reviewer_vs_model, second_review_reason,
                                   second_review_share_setting)
from core.review.artifacts import ArtifactStore
from core.review.store import views
from core.review.store.base import DEFAULT_LEASE_SECONDS, DEFAULT_UNDO_WINDOW_SECONDS, Clock, StoreError, iso
from core.review.store.blobs import BlobStore
from core.review.store.db import Database, is_url
from core.review.store.exports import ExportsOwner, counts, is_hard_negative
from core.review.store.items import ItemsOwner, check_sha256
from core.review.store.jobs import JobsOwner
from core.review.store.labels import (LabelFilters, LabelsOwner, check_label, check_note, check_seconds, minutes,
                                      undo_cutoff)
from core.review.store.monitor import Monitor
from core.review.store.queue import QUEUE_STATES, QueueOwner, check_reviewer, claim_reason
from core.review.store.schema import migrate, schema_version
from core.review.store.tables import settings

#: Called as ``progress(done, total)`` after each exported item.
Progress = Any


def _via(owner: str, cls: type, name: str):
    """A front method that hands the call to one owner (same signature and docstring)."""
    target = getattr(cls, name)

    @functools.wraps(target)
    def method(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(getattr(self, owner), name)(*args, **kwargs)

    return method


class ReviewStore:
    """Review queue, labels, score log and exports on SQLite or PostgreSQL (safe for many processes)."""

    def __init__(self, db_path: str | os.PathLike, *, image_dir: str | os.PathLike | None = None,
                 privacy_mode: bool = False, lease_seconds: float = DEFAULT_LEASE_SECONDS,
                 undo_window_seconds: float = DEFAULT_UNDO_WINDOW_SECONDS, clock: Clock | None = None,
                 synchronous: str = "FULL", artifact_dir: str | os.PathLike | None = None,
                 second_review_share: float | None | str = "env") -> None:
        #: Share of first labels sent to a blind second reviewer (None: double review off).
        self.second_review_share = second_review_share_setting(second_review_share)
        self.lease_seconds = self._positive(lease_seconds, "lease_seconds")
        self.undo_window_seconds = self._positive(undo_window_seconds, "undo_window_seconds")
        self.db = Database(db_path, clock=clock, synchronous=synchronous)
        try:
            migrate(self.db)
            if privacy_mode:
                with self.db.write():
                    self.db.upsert(settings, {"key": "privacy_mode", "value": "1"}, keys=("key",))
            flag = self.db.scalar(sa.select(settings.c.value).where(settings.c.key == "privacy_mode"))
        except BaseException:
            self.db.close()
            raise
        self.privacy_mode = flag == "1"
        #: The SQLite file (None on PostgreSQL); ``url`` names the database either way (password hidden).
        self.db_path: Path | None = self.db.path
        self.url = self.db.where()
        self.image_dir = Path(image_dir) if image_dir is not None else _default_image_dir(self.db_path)
        self.blobs = BlobStore(self.image_dir)
        #: Evidence and features per (item, model), beside the images (see core.review.artifacts).
        self.artifact_dir = Path(artifact_dir) if artifact_dir is not None else self.image_dir.parent / "artifacts"
        self.artifacts = ArtifactStore(self.artifact_dir)
        self.items = ItemsOwner(self.db, self.blobs, self.privacy_mode)
        self.queue = QueueOwner(self.db, self.lease_seconds)
        self.labels = LabelsOwner(self.db)
        self.exports = ExportsOwner(self.db)
        self.jobs = JobsOwner(self.db)
        self.monitor = Monitor(self.db)

    @classmethod
    def open(cls, db_path: str | os.PathLike | None = None, **kwargs: Any) -> "ReviewStore":
        """Open (creating on first use) ``db_path`` — a path or a URL — or the default database."""
        if db_path is None:
            from core.paths import default_db_target

            db_path = default_db_target()
        return cls(db_path, **kwargs)

    # -- plumbing ------------------------------------------------------------
    @property
    def conn(self) -> sa.Connection:
        """The SQLAlchemy connection (driver autocommit: statements outside :meth:`batch` commit at once)."""
        return self.db.conn

    @property
    def engine(self) -> sa.Engine:
        return self.db.engine

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.db.dialect

    @property
    def schema_version(self) -> int:
        return schema_version(self.db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "ReviewStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def now(self) -> _dt.datetime:
        """The store's clock: the injected one, else PostgreSQL's server clock or this machine's (SQLite)."""
        return self.db.now()

    def now_iso(self) -> str:
        return self.db.now_iso()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group many calls into one transaction (one commit), e.g. scoring a folder.

        A failing call inside the batch is rolled back on its own (savepoint);
        the batch commits whatever succeeded when the block ends normally.
        """
        with self.db.write():
            yield

    @staticmethod
    def _positive(value: float, name: str) -> float:
        value = float(value)
        if not value > 0:
            raise StoreError(f"{name} must be positive.")
        return value

    def __repr__(self) -> str:
        return f"ReviewStore({self.url!r}, privacy_mode={self.privacy_mode})"

    # -- items and scorings ----------------------------------------------------
    def add_item(self, data: bytes, *, name: str, uploader: str | None = None, sha256: str | None = None) -> str:
        """Store the bytes (or only a thumbnail in privacy mode) and return their SHA-256 (idempotent).

        ``sha256``: the digest the caller already computed of these bytes (so an upload is hashed once)."""
        return self.items.add(data, name=name, uploader=uploader, sha256=sha256)

    def record_scoring(self, sha256: str, *, model_sha256: str | None, model_label: str | None = None,
                       preprocess_fingerprint: str | None = None, calibration_version: str | None = None,
                       logit: float, probability: float, tier: str, reasons: Sequence[str] = (),
                       guardrails: Mapping[str, Any] | None = None, timings: Mapping[str, Any] | None = None,
                       auto_queue: bool = True, precision: str | None = None) -> int:
        """Append one scoring of a stored item; returns its id.

        A ``review``-tier scoring queues the item unless it is already queued
        or already carries a human label (``auto_queue=False`` to opt out).
        ``precision`` names the numeric path that served it (``fp32``, ``bf16``…).
        """
        sha = check_sha256(sha256)
        with self.db.write():
            scoring_id = self.items.add_scoring(
                sha, model_sha256=model_sha256, model_label=model_label, preprocess_fingerprint=preprocess_fingerprint,
                calibration_version=calibration_version, logit=logit, probability=probability, tier=tier,
                reasons=reasons, guardrails=guardrails, timings=timings, precision=precision)
            queue_it = auto_queue and tier == "review" and self.labels.current(sha) is None
            self.queue.after_scoring(sha, float(probability), queue_it=queue_it)
        return scoring_id

    def item(self, sha256: str) -> dict[str, Any]:
        """Everything about one item: facts, uploads, scorings, label history and version, queue state and events."""
        sha = check_sha256(sha256)
        with self.db.read():
            out = self.items.need(sha)
            out["uploads"] = self.items.uploads(sha)
            out["scorings"] = self.items.scorings(sha)
            out["latest_scoring"] = out["scorings"][-1] if out["scorings"] else None
            out["label_events"] = self.labels.events(sha)
            out["current_label"] = self.labels.current(sha, detail=True)
            out["label_version"] = len(out["label_events"])
            out["queue"] = self.queue.row(sha)
            out["queue_state"] = out["queue"]["state"] if out["queue"] else None  # shortcut, as in recent_items
            out["queue_events"] = self.queue.events(sha)
            out["review_stage"] = (out["queue"] or {}).get("stage") or "first"
            out["agreement_state"] = agreement_state(out["review_stage"], out["queue_state"],
                                                     out["current_label"] is not None)
        return out

    def has_item(self, sha256: str) -> bool:
        """True when the item is stored (one row read; :meth:`item` reads its whole history)."""
        with self.db.read():
            return self.items.get(check_sha256(sha256)) is not None

    def has_scoring(self, sha256: str, model_sha256: str) -> bool:
        """True when the item is stored and ``model_sha256`` has scored it (batch re-runs add nothing)."""
        return self.items.has_scoring(check_sha256(sha256), str(model_sha256))

    def latest_scoring(self, sha256: str) -> dict[str, Any] | None:
        return self.items.latest_scoring(check_sha256(sha256))

    def image_bytes(self, sha256: str) -> bytes | None:
        """The original bytes; in privacy mode (``storage == 'thumbnail'``) the thumbnail; else None."""
        return self.items.image_bytes(check_sha256(sha256))

    def recent_items(self, limit: int = 50, offset: int = 0, *, search: str | None = None,
                     tier: str | None = None, state: str | None = None,
                     labelled: bool | None = None) -> list[dict[str, Any]]:
        """Items most recently uploaded first, with latest score, queue state and label.

        ``search`` matches a SHA-256 prefix or part of the original name.
        """
        with self.db.read():
            return self.db.rows(views.recent_items(limit, offset, search=search, tier=tier, state=state,
                                                   labelled=labelled))

    # -- queue -------------------------------------------------------------------
    def enqueue(self, sha256: str, *, by: str | None = None, reason: str = "manual") -> dict[str, Any]:
        """Queue any stored item by hand (a labelled item is queued again for a second look).

        Idempotent: an item already queued or leased is left as it is.
        """
        sha = check_sha256(sha256)
        reason = (reason or "manual").strip() or "manual"
        with self.db.write():
            self.items.need(sha)
            scoring = self.items.latest_scoring(sha)
            return self.queue.enqueue(sha, scoring["probability"] if scoring else None, by=by, reason=reason)

    def claim_next(self, reviewer: str, lease_seconds: float | None = None) -> dict[str, Any] | None:
        """Lease the most uncertain queued item to ``reviewer``; None when the queue is empty.

        The item comes with its facts, queue row, latest scoring, label in force,
        ``label_version`` (pass it back to :meth:`label`) and ``why`` it was picked.
        """
        reviewer = check_reviewer(reviewer)
        with self.db.write():
            claimed = self.queue.claim(reviewer, lease_seconds)
            if claimed is None:
                return None
            row, expired_from = claimed
            sha = row["sha256"]
            out = self.items.need(sha)
            queue = self.queue.row(sha)
            out.update({k: queue[k] for k in ("state", "distance", "round", "enqueued_at", "enqueued_by", "reason",
                                              "lease_reviewer", "lease_expires_at", "stage")})
            out["scoring"] = self.items.latest_scoring(sha)
            # blind: a second reviewer never sees the first label; an adjudicator sees both
            out["current_label"] = self.labels.current(sha) if queue["stage"] == "first" else None
            out["earlier_labels"] = self.labels.in_force(sha) if queue["stage"] == "adjudication" else []
            out["label_version"] = self.labels.version(sha)
            out["why"] = claim_reason(row, expired_from, out["scoring"]["probability"] if out["scoring"] else None)
            return out

    def renew_lease(self, sha256: str, reviewer: str, lease_seconds: float | None = None) -> str:
        """Extend one's own lease; returns the new expiry."""
        sha, reviewer = check_sha256(sha256), check_reviewer(reviewer)
        with self.db.write():
            self.items.need(sha)
            return self.queue.renew(sha, reviewer, lease_seconds)

    def release(self, sha256: str, reviewer: str) -> None:
        """Give a leased item back; it keeps its place in the queue."""
        sha, reviewer = check_sha256(sha256), check_reviewer(reviewer)
        with self.db.write():
            self.items.need(sha)
            self.queue.release(sha, reviewer)

    def skip(self, sha256: str, reviewer: str) -> None:
        """Send an item to the back of the queue (behind every item not yet skipped as often)."""
        sha, reviewer = check_sha256(sha256), check_reviewer(reviewer)
        with self.db.write():
            self.items.need(sha)
            self.queue.skip(sha, reviewer)

    def waiting_for_uncertainty(self) -> list[str]:
        """Items waiting for their first review whose place in the queue is the model's uncertainty."""
        return self.queue.waiting_for_uncertainty()

    def reprioritise(self, probabilities: Mapping[str, float]) -> int:
        """Move waiting items to their place by the active model's probability (one transaction);
        items queued for another reason keep theirs. Returns how many rows changed."""
        with self.db.write():
            return self.queue.reprioritise(dict(probabilities))

    def queue_stats(self) -> dict[str, int]:
        """Counts per queue state; a lease that has run out counts as queued."""
        return self.queue.stats()

    def queue_items(self, limit: int = 50, *, state: str | None = None) -> list[dict[str, Any]]:
        """Queue rows with name and latest score: leased ones, then queued ones in claim order.

        ``state`` narrows to one state (``labelled`` lists the most recently enqueued first).
        """
        if state is not None and state not in QUEUE_STATES:
            raise StoreError(f"Unknown queue state {state!r}; expected one of {', '.join(QUEUE_STATES)}.")
        out: list[dict[str, Any]] = []
        with self.db.read():
            for st in ([state] if state else ["leased", "queued"]):
                if len(out) >= limit:
                    break
                out += self.db.rows(views.queue_listing(st, int(limit) - len(out)))
        return out

    def leases(self, reviewer: str | None = None) -> list[dict[str, Any]]:
        """Active (unexpired) leases, e.g. to resume one's own item after a page reload."""
        return self.queue.leases(reviewer)

    # -- labels --------------------------------------------------------------------
    def label(self, sha256: str, label: str, reviewer: str, note: str | None = None,
              seconds_spent: float | None = None, *, authenticated: bool = False,
              expected_version: int | None = None) -> dict[str, Any]:
        """Record a decision; allowed for the lease holder or on an item nobody else holds.

        The item leaves the queue (state ``labelled``); a later label supersedes
        this one without erasing it. ``authenticated`` records whether the
        reviewer was signed in (not a typed name). ``expected_version`` (the
        ``label_version`` the reviewer saw) refuses the write if someone else
        decided on the item meanwhile. Returns the label event with the new
        ``label_version``.
        """
        sha, reviewer, label = check_sha256(sha256), check_reviewer(reviewer), check_label(label)
        note, seconds_spent = check_note(note), check_seconds(seconds_spent)
        with self.db.write():
            self.items.need(sha)
            self.labels.lock(sha)
            if expected_version is not None:
                self.labels.check_version(sha, expected_version)
            now = self.db.now_iso()
            row = self.queue.before_label(sha, reviewer, now)
            scoring = self.items.latest_scoring(sha)
            stage = (row or {}).get("stage") or "first"
            next_stage, reason = self._next_stage(sha, stage, label, reviewer, scoring)
            event = self.labels.add(sha, label, reviewer, now, note=note, seconds_spent=seconds_spent,
                                    scoring_id=scoring["id"] if scoring else None, authenticated=authenticated,
                                    stage=stage)
            self.queue.after_label(sha, reviewer, label, now, row=row,
                                   probability=scoring["probability"] if scoring else None,
                                   next_stage=next_stage, reason=reason)
            event["label_version"] = self.labels.version(sha)
            return event

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
        with self.db.write():
            self.db.lock(f"undo:{reviewer}")
            now = self.db.now()
            event = self.labels.latest_undoable(reviewer)
            if event is None or event["created_at"] < undo_cutoff(now, window):
                raise StoreError(f"Nothing to undo: {reviewer} has no label from the last {minutes(window)}.")
            sha = event["sha256"]
            self.labels.lock(sha)
            undo_id, current = self.labels.undo(event, reviewer, iso(now))
            expires = self.queue.after_undo(sha, reviewer, event["label"], now, still_labelled=current is not None,
                                            stage=event.get("stage") if self.second_review_share is not None else None)
            return {"undo_event_id": undo_id, "undone": event, "current_label": current,
                    "queue_state": self.queue.state(sha), "lease_expires_at": expires,
                    "label_version": self.labels.version(sha)}

    def _next_stage(self, sha: str, stage: str, label: str, reviewer: str,
                    scoring: dict[str, Any] | None) -> tuple[str | None, str | None]:
        """Blind double review: the stage this label sends the item to (None: done) and why."""
        if self.second_review_share is None:
            return None, None
        earlier = [e for e in self.labels.in_force(sha) if e["stage"] != stage or stage == "first"]
        if stage != "first" and any(e["reviewer"] == reviewer for e in earlier):
            raise StoreError(f"Item {sha[:12]}… waits for an independent {stage} review; {reviewer} already "
                             "labelled it, so someone else has to.")
        if stage == "first":
            why = second_review_reason(sha, (scoring or {}).get("tier"), label, self.second_review_share)
            return ("second", why) if why else (None, None)
        if stage == "second":
            first = next((e for e in earlier if e["stage"] == "first"), None)
            if first is not None and first["label"] != label:
                return "adjudication", (f"adjudication: {first['reviewer']} said {first['label']}, "
                                        f"{reviewer} said {label}")
        return None, None

    def agreement_state(self, sha256: str) -> str | None:
        """Where the item stands in double review (see core.review.agreement.AGREEMENT_STATES), None unlabelled."""
        sha = check_sha256(sha256)
        with self.db.read():
            row, current = self.queue.row(sha), self.labels.current(sha)
        return agreement_state((row or {}).get("stage"), (row or {}).get("state"), current is not None)

    def agreement(self) -> dict[str, Any]:
        """Cohen's kappa per reviewer pair and overall over double-reviewed items, and the reviewer-vs-model
        confusion of the labels in force."""
        with self.db.read():
            stream = self.labels.stream()
            tiers = self.db.rows(views.labels_with_tier())
        per_pair, overall = pair_agreements(stream)
        return {"pairs": [p.to_json() for p in per_pair], "overall": overall.to_json() if overall else None,
                "reviewer_vs_model": reviewer_vs_model(tiers)}

    def label_history(self, *, reviewer: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Latest label and undo events first (the audit trail), optionally for one reviewer; each
        carries its item's file name (``name``), so a list of decisions needs no item reads."""
        with self.db.read():
            return self.db.rows(views.label_history(check_reviewer(reviewer) if reviewer else None, limit))

    def labelled_items(self, filters: Mapping[str, Any] | None = None, *, limit: int | None = 100,
                       offset: int = 0, **kwargs: Any) -> list[dict[str, Any]]:
        """Items with a label in force matching ``filters`` (see :class:`LabelFilters`), oldest label first."""
        q = views.labelled(LabelFilters.make(filters, **kwargs))
        if limit is not None:
            q = q.limit(int(limit)).offset(int(offset))
        with self.db.read():
            return views.as_dicts(self.db.rows(q))

    def labels_with_scorings(self) -> list[dict[str, Any]]:
        """Each label in force (``sha256``, ``label``) with the scoring it was given on: ``scoring_id``,
        ``model_sha256``, ``tier``, ``probability`` and parsed ``guardrails`` (None when never scored)."""
        with self.db.read():
            rows = self.db.rows(views.labels_with_seen_scoring())
        for r in rows:
            r["guardrails"] = json.loads(r["guardrails"]) if r.get("guardrails") else ({} if r["scoring_id"] else None)
        return rows

    def label_event_count(self) -> int:
        """Label events ever given (undos not subtracted): the background learner's counter."""
        return self.labels.count_labels()

    def items_seen_since(self, *, hours: float = 24.0, limit: int = 2000) -> list[str]:
        """Items uploaded in the last ``hours`` (by the store's clock), latest first."""
        since = iso(self.db.now() - _dt.timedelta(hours=float(hours)))
        return self.items.seen_since(since, limit)

    def reviewers(self) -> list[str]:
        with self.db.read():
            return self.labels.reviewers()

    # -- exports -----------------------------------------------------------------------
    def export_batch(self, out_dir: str | os.PathLike, *, since: Any = None, until: Any = None,
                     reviewer: str | None = None, label: str | None = None, model_sha256: str | None = None,
                     only_new: bool = True, include_all_reviewed: bool = False, exported_by: str | None = None,
                     progress: Progress | None = None, sqlite: str | os.PathLike | None = None) -> dict[str, Any]:
        """Write the recalibration CSV/JSONL and the hard-negative zip for the matching labelled items.

        ``include_all_reviewed`` puts every real/fake-labelled item in the zip, not
        only the hard negatives; ``sqlite`` also writes the batch as a SQLite file
        (items, scorings, labels) for Datasette. Returns paths, counts, file
        hashes and the export id (see :mod:`core.review.export_files`).
        """
        from core.review.export_files import write_export

        filters = LabelFilters.make(since=since, until=until, reviewer=reviewer, label=label,
                                    model_sha256=model_sha256, only_new=only_new)
        with self.db.read():
            rows = views.as_dicts(self.db.rows(views.labelled(filters)))
        recorded = {**filters.to_dict(), "include_all_reviewed": bool(include_all_reviewed)}
        return write_export(self, rows, out_dir, recorded, include_all_reviewed=include_all_reviewed,
                            exported_by=exported_by, progress=progress, sqlite=sqlite)

    def repeat_export(self, export_id: str, out_dir: str | os.PathLike, *, exported_by: str | None = None,
                      progress: Progress | None = None, sqlite: str | os.PathLike | None = None) -> dict[str, Any]:
        """Write the very same batch again (same label events and scorings), recorded as a new export."""
        from core.review.export_files import write_export

        with self.db.read():
            original = self.exports.get(export_id)
            rows = views.as_dicts(self.db.rows(views.exported(export_id)))
        filters = original["filters"]
        return write_export(self, rows, out_dir, filters, include_all_reviewed=bool(filters.get("include_all_reviewed")),
                            exported_by=exported_by, progress=progress, repeat_of=export_id, sqlite=sqlite)

    def export_preview(self, filters: Mapping[str, Any] | None = None, *, hard_negative_limit: int = 500,
                       **kwargs: Any) -> dict[str, Any]:
        """Counts and the hard-negative list an export with these filters would produce (writes nothing).

        Filters as for :meth:`export_batch`; ``only_new`` defaults to True there and here.
        """
        raw = {"only_new": True, **dict(filters or {}), **kwargs}
        include_all = bool(raw.pop("include_all_reviewed", False))
        parsed = LabelFilters.make(raw)
        with self.db.read():
            rows = views.as_dicts(self.db.rows(views.labelled(parsed)))
        hard = [r for r in rows if is_hard_negative(r)]
        return {"filters": {**parsed.to_dict(), "include_all_reviewed": include_all},
                "counts": counts(rows, include_all), "hard_negatives": hard[:hard_negative_limit]}

    def export_history(self, limit: int = 50) -> list[dict[str, Any]]:
        """Recorded exports, newest first, with filters, counts and file hashes."""
        with self.db.read():
            return self.exports.history(limit)

    # -- monitoring (read-only) --------------------------------------------------------------
    daily_histograms = _via("monitor", Monitor, "daily_histograms")
    tier_mix = _via("monitor", Monitor, "tier_mix")
    flagged_share = _via("monitor", Monitor, "flagged_share")
    queue_flow = _via("monitor", Monitor, "queue_flow")
    overturn_rate = _via("monitor", Monitor, "overturn_rate")
    scores_between = _via("monitor", Monitor, "scores_between")
    default_windows = _via("monitor", Monitor, "default_windows")
    drift = _via("monitor", Monitor, "drift")


def _default_image_dir(db_path: Path | None) -> Path:
    """``$LADEDA_IMAGE_DIR``, else ``images/`` beside the SQLite file, else in the data directory (PostgreSQL)."""
    from core.paths import data_dir, image_dir_override

    override = image_dir_override()
    if override is not None:
        return override
    return db_path.parent / "images" if db_path is not None else data_dir() / "images"


def open_store(target: str | os.PathLike | None = None, *, create: bool = False, **kwargs: Any) -> ReviewStore:
    """Open a review store from a path or a URL: the one opener of the CLI's ``--db`` and the dashboard.

    ``None`` opens the default (``$LADEDA_DATABASE_URL``, else ``review.sqlite``
    in the data directory, created on first use). A SQLite path that does not
    exist is refused unless ``create`` (a mistyped path must not silently make
    an empty database); a URL is never created, its database must exist.
    """
    if target is None:
        return ReviewStore.open(None, **kwargs)
    if not is_url(target):
        path = Path(target)
        if not path.exists() and not create:
            where = "its folder does not exist" if not path.parent.exists() else "the file does not exist"
            raise StoreError(f"No review database at {path} ({where}). Check the path, or add --create to make a "
                             "new one.")
    return ReviewStore(target, **kwargs)

"""Read-only joins across owners: the lists the dashboard and exports show.

Why a module of its own: a list of items with their latest score, queue
state and label reads four owners' tables. These joins write nothing, so
ownership (who may change a table) stays with the owners, and each join is
written once for both databases.
"""
from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from core.review.agreement import agreement_state
from core.review.store.exports import provenance_columns
from core.review.store.labels import LabelFilters
from core.review.store.queue import CLAIM_ORDER
from core.review.store.items import latest_scoring_id
from core.review.store.tables import current_labels, export_items, items, label_events, queue, scorings

_I, _S, _Q, _C, _E, _X = items.c, scorings.c, queue.c, current_labels.c, label_events.c, export_items.c
#: What an export, a preview and the labelled list carry per labelled item.
_SELECTION = (_I.name, _I.ext, _I.storage, _I.size, _I.uploaded_at, _S.id.label("scoring_id"), _S.logit,
              _S.probability, _S.tier, _S.model_sha256, _S.model_label, _S.calibration_version,
              _S.preprocess_fingerprint, _S.precision, _S.scored_at,
              _S.guardrails.label("scoring_guardrails"))  # read for its provenance cells, then dropped (as_dicts)


#: Where the item stands in blind double review (turned into ``agreement_state`` by :func:`as_dicts`).
_REVIEW_STAGE = (_Q.stage.label("review_stage"), _Q.state.label("queue_state"))


def _like_escape(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def recent_items(limit: int = 50, offset: int = 0, *, search: str | None = None, tier: str | None = None,
                 state: str | None = None, labelled: bool | None = None) -> sa.Select:
    """Items most recently uploaded first, with latest score, queue state and label.

    ``search`` matches a SHA-256 prefix or part of the original name (case-insensitive).
    """
    q = sa.select(_I.sha256, _I.name, _I.size, _I.ext, _I.storage, _I.uploaded_at, _I.uploader, _I.last_seen_at,
                  _S.id.label("scoring_id"), _S.scored_at, _S.model_sha256, _S.logit, _S.probability, _S.tier,
                  _Q.state.label("queue_state"), _Q.lease_reviewer, _Q.lease_expires_at,
                  _C.label, _C.reviewer, _C.labelled_at).select_from(
        items.outerjoin(scorings, _S.id == latest_scoring_id(_I.sha256))
        .outerjoin(queue, _Q.sha256 == _I.sha256).outerjoin(current_labels, _C.sha256 == _I.sha256))
    if search:
        text = search.strip().lower()
        name_match = sa.func.lower(_I.name).like(_like_escape(text), escape="\\")
        if re.fullmatch(r"[0-9a-f]{4,64}", text):
            q = q.where(sa.or_(sa.and_(_I.sha256 >= text, _I.sha256 < text + "g"), name_match))
        else:
            q = q.where(name_match)
    if tier:
        q = q.where(_S.tier == tier)
    if state:
        q = q.where(_Q.state == state)
    if labelled is not None:
        q = q.where(_C.sha256.is_not(None) if labelled else _C.sha256.is_(None))
    return q.order_by(_I.last_seen_at.desc(), _I.sha256).limit(int(limit)).offset(int(offset))


def queue_listing(state: str, limit: int) -> sa.Select:
    """Queue rows of one state with name and latest score: claim order, lease expiry, or newest first."""
    order = {"leased": (_Q.lease_expires_at,), "queued": CLAIM_ORDER, "labelled": (_Q.enqueued_at.desc(),)}[state]
    return (sa.select(queue, _I.name, _S.probability, _S.tier, _S.logit)
            .select_from(queue.join(items, _I.sha256 == _Q.sha256)
                         .outerjoin(scorings, _S.id == latest_scoring_id(_Q.sha256)))
            .where(_Q.state == sa.literal_column(f"'{state}'")).order_by(*order).limit(int(limit)))


def labelled(filters: LabelFilters) -> sa.Select:
    """The labelled items matching ``filters`` with the scoring used for each (latest, or latest by model)."""
    q = sa.select(_C.sha256, _C.event_id.label("label_event_id"), _C.label, _C.reviewer, _C.labelled_at, _E.note,
                  _E.seconds_spent, _E.authenticated, *_SELECTION, *_REVIEW_STAGE).select_from(
        current_labels.join(items, _I.sha256 == _C.sha256).join(label_events, _E.id == _C.event_id)
        .outerjoin(scorings, _S.id == latest_scoring_id(_C.sha256, filters.model_sha256))
        .outerjoin(queue, _Q.sha256 == _C.sha256))
    if filters.model_sha256:
        q = q.where(_S.id.is_not(None))
    if filters.since is not None:
        q = q.where(_C.labelled_at >= filters.since)
    if filters.until is not None:
        q = q.where(_C.labelled_at < filters.until)
    if filters.reviewer is not None:
        q = q.where(_C.reviewer == filters.reviewer)
    if filters.label is not None:
        q = q.where(_C.label == filters.label)
    if filters.only_new:
        q = q.where(~sa.exists().where(_X.label_event_id == _C.event_id))
    return q.order_by(_C.labelled_at, _C.sha256)


def label_history(reviewer: str | None, limit: int) -> sa.Select:
    """Latest label and undo events first, each with its item's original file name (``name``)."""
    q = sa.select(label_events, _I.name).select_from(label_events.join(items, _I.sha256 == _E.sha256))
    if reviewer:
        q = q.where(_E.reviewer == reviewer)
    return q.order_by(_E.id.desc()).limit(int(limit))


def labels_with_seen_scoring() -> sa.Select:
    """Every label in force with the scoring its label event was given on (the item's latest when the
    event names none): one query for what per-segment reliability counts, instead of one item history
    per label, which grew with the store on every label."""
    seen = sa.func.coalesce(_E.scoring_id, latest_scoring_id(_C.sha256))
    return (sa.select(_C.sha256, _C.label, _S.id.label("scoring_id"), _S.model_sha256, _S.tier, _S.probability,
                      _S.guardrails)
            .select_from(current_labels.join(label_events, _E.id == _C.event_id).outerjoin(scorings, _S.id == seen))
            .order_by(_C.labelled_at, _C.sha256))


def exported(export_id: str) -> sa.Select:
    """The very rows a recorded export wrote (same label events and scorings), in the same order."""
    return (sa.select(_X.sha256, _X.label_event_id, _E.label, _E.reviewer, _E.created_at.label("labelled_at"),
                      _E.note, _E.seconds_spent, _E.authenticated, *_SELECTION, *_REVIEW_STAGE)
            .select_from(export_items.join(label_events, _E.id == _X.label_event_id)
                         .join(items, _I.sha256 == _X.sha256).outerjoin(scorings, _S.id == _X.scoring_id)
                         .outerjoin(queue, _Q.sha256 == _X.sha256))
            .where(_X.export_id == export_id).order_by(_E.created_at, _X.sha256))


def as_dicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Booleans as Python bools on both databases (SQLite returns 0/1 through a text join); the scoring's
    guardrail report reduced to the export's provenance cells."""
    for r in rows:
        if "authenticated" in r and r["authenticated"] is not None:
            r["authenticated"] = bool(r["authenticated"])
        if "review_stage" in r:
            r["agreement_state"] = agreement_state(r.pop("review_stage"), r.pop("queue_state", None), True)
        if "scoring_guardrails" in r:
            r.update(provenance_columns(r.pop("scoring_guardrails")))
    return rows


def labels_with_tier() -> sa.Select:
    """The label in force of every labelled item with the tier its latest scoring got (model-vs-reviewer)."""
    return sa.select(_C.sha256, _C.label, _S.tier).select_from(
        current_labels.outerjoin(scorings, _S.id == latest_scoring_id(_C.sha256)))

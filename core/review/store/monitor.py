"""Monitoring read off the score log: is the model's input or behaviour drifting?

Daily score histograms, tier mix and flagged share come from ``scorings``;
queue inflow/outflow from ``queue_events``; the overturn rate compares each
label in force with the model's verdict on the scoring the reviewer saw.
Drift compares a recent window of scores against a reference window with the
Population Stability Index (PSI) and the two-sample Kolmogorov–Smirnov test.
Read-only: these queries write nothing and run the same on both databases.

PSI thresholds (the usual credit-scoring convention): below 0.1 stable
(``ok``), 0.1–0.25 moderate shift (``warn``), 0.25 and above a significant
shift (``alert``). Everything returns plain lists and dicts (JSON-ready).
"""
from __future__ import annotations

import datetime as _dt
import math
from typing import Any, Sequence

import numpy as np

import sqlalchemy as sa

from core.review.store.base import StoreError, iso, parse_time
from core.review.store.db import POSTGRESQL, Database
from core.review.store.exports import model_verdict
from core.review.store.tables import current_labels, label_events, queue_events, scorings

_S, _QE, _C, _E = scorings.c, queue_events.c, current_labels.c, label_events.c

PSI_WARN = 0.1
PSI_ALERT = 0.25
#: Floor on bin shares so an empty bin does not make PSI infinite.
PSI_EPSILON = 1e-4

Window = tuple[Any, Any]


def psi(reference: Sequence[float], recent: Sequence[float], bins: int = 10) -> float:
    """Population Stability Index of ``recent`` against ``reference`` on the reference's quantile bins."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(recent, dtype=np.float64)
    if ref.size == 0 or cur.size == 0:
        raise StoreError("PSI needs scores in both windows.")
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    edges = np.concatenate(([-np.inf], inner, [np.inf]))
    e = np.histogram(ref, edges)[0] / ref.size
    a = np.histogram(cur, edges)[0] / cur.size
    e, a = np.maximum(e, PSI_EPSILON), np.maximum(a, PSI_EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def drift_level(psi_value: float | None) -> str:
    """``ok`` / ``warn`` / ``alert`` for a PSI value (see the module docstring for thresholds)."""
    if psi_value is None or psi_value < PSI_WARN:
        return "ok"
    return "warn" if psi_value < PSI_ALERT else "alert"


def _days(first: _dt.date, last: _dt.date) -> list[str]:
    return [(first + _dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


class Monitor:
    """Monitoring queries on one :class:`Database` (the score log, queue events and labels in force)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def now(self) -> _dt.datetime:
        return self.db.now()

    def _day(self, column: sa.ColumnElement) -> sa.ColumnElement:
        return sa.func.substr(column, 1, 10).label("day")

    def _per_day(self, since: str, model_sha256: str | None, *extra: sa.ColumnElement) -> sa.Select:
        q = sa.select(self._day(_S.scored_at), *extra, sa.func.count().label("n")).where(_S.scored_at >= since)
        if model_sha256:
            q = q.where(_S.model_sha256 == model_sha256)
        return q.group_by(sa.literal_column("day"), *extra)

    # -- daily series ----------------------------------------------------
    def _day_range(self, days: int) -> tuple[list[str], str]:
        if int(days) < 1:
            raise StoreError("days must be at least 1.")
        today = self.now().date()
        first = today - _dt.timedelta(days=int(days) - 1)
        return _days(first, today), iso(_dt.datetime(first.year, first.month, first.day, tzinfo=_dt.timezone.utc))

    def daily_histograms(self, days: int = 30, bins: int = 10, *, model_sha256: str | None = None) -> dict[str, Any]:
        """Per UTC day, counts of probabilities in ``bins`` equal-width bins over [0, 1]."""
        if not 1 <= int(bins) <= 100:
            raise StoreError("bins must be between 1 and 100.")
        day_list, since = self._day_range(days)
        scaled = _S.probability * int(bins)
        whole = sa.func.floor(scaled) if self.db.dialect == POSTGRESQL else scaled  # CAST rounds on PostgreSQL
        bin_ = sa.cast(whole, sa.Integer).label("bin")
        with self.db.read():
            rows = [(r["day"], r["bin"], r["n"]) for r in self.db.rows(self._per_day(since, model_sha256, bin_))]
        table = {d: [0] * int(bins) for d in day_list}
        for day, b, n in rows:
            if day in table:
                table[day][min(int(b), int(bins) - 1)] += int(n)
        return {"edges": [round(i / bins, 10) for i in range(int(bins) + 1)],
                "days": [{"day": d, "n": sum(c), "counts": c} for d, c in table.items()]}

    def tier_mix(self, days: int = 30, *, model_sha256: str | None = None) -> list[dict[str, Any]]:
        """Per UTC day: scorings per tier, total, flagged share (tier ``fake``) and review share."""
        day_list, since = self._day_range(days)
        with self.db.read():
            rows = [(r["day"], r["tier"], r["n"]) for r in self.db.rows(self._per_day(since, model_sha256, _S.tier))]
        table = {d: {"day": d, "real": 0, "review": 0, "fake": 0} for d in day_list}
        for day, tier, n in rows:
            if day in table:
                table[day][tier] += int(n)
        out = []
        for row in table.values():
            total = row["real"] + row["review"] + row["fake"]
            out.append({**row, "total": total, "flagged_share": row["fake"] / total if total else None,
                        "review_share": row["review"] / total if total else None})
        return out

    def flagged_share(self, days: int = 30, *, model_sha256: str | None = None) -> dict[str, Any]:
        """Share of scorings the model flagged as fake over the period, and per day."""
        mix = self.tier_mix(days, model_sha256=model_sha256)
        total = sum(r["total"] for r in mix)
        fake = sum(r["fake"] for r in mix)
        return {"flagged": fake, "total": total, "share": fake / total if total else None,
                "daily": [{"day": r["day"], "flagged": r["fake"], "total": r["total"], "share": r["flagged_share"]}
                          for r in mix]}

    def queue_flow(self, days: int = 30) -> list[dict[str, Any]]:
        """Per UTC day: items entering the queue (inflow), labelled (outflow), leases expired, skips."""
        day_list, since = self._day_range(days)
        q = (sa.select(sa.func.substr(_QE.at, 1, 10).label("day"), _QE.event, sa.func.count().label("n"))
             .where(_QE.at >= since, _QE.event.in_(("enqueued", "labelled", "expired", "skipped")))
             .group_by(sa.literal_column("day"), _QE.event))
        rows = [(r["day"], r["event"], r["n"]) for r in self.db.rows(q)]
        names = {"enqueued": "inflow", "labelled": "outflow", "expired": "expired", "skipped": "skipped"}
        table = {d: {"day": d, "inflow": 0, "outflow": 0, "expired": 0, "skipped": 0} for d in day_list}
        for day, event, n in rows:
            if day in table:
                table[day][names[event]] += int(n)
        return list(table.values())

    def overturn_rate(self, *, since: Any = None, until: Any = None) -> dict[str, Any]:
        """Share of real/fake labels in force that contradict the model's verdict, overall and per reviewer.

        The verdict is the model's on the scoring the reviewer saw (review-tier
        items split at p = 0.5); unsure labels and unscored items are left out.
        """
        q = (sa.select(_C.reviewer, _C.label, _S.tier, _S.probability)
             .select_from(current_labels.join(label_events, _E.id == _C.event_id)
                          .join(scorings, _S.id == _E.scoring_id))
             .where(_C.label.in_(("real", "fake"))))
        since, until = parse_time(since, what="start time"), parse_time(until, what="end time")
        if since:
            q = q.where(_C.labelled_at >= since)
        if until:
            q = q.where(_C.labelled_at < until)
        rows = [(r["reviewer"], r["label"], r["tier"], r["probability"]) for r in self.db.rows(q)]
        per: dict[str, list[int]] = {}
        for reviewer, label, tier, prob in rows:
            counts = per.setdefault(reviewer, [0, 0])
            counts[0] += 1
            counts[1] += model_verdict(tier, prob) != label
        labelled = sum(c[0] for c in per.values())
        overturned = sum(c[1] for c in per.values())
        return {"labelled": labelled, "overturned": overturned, "rate": overturned / labelled if labelled else None,
                "by_reviewer": {r: {"labelled": c[0], "overturned": c[1], "rate": c[1] / c[0]}
                                for r, c in sorted(per.items())}}

    # -- drift -----------------------------------------------------------
    def scores_between(self, since: Any, until: Any, *, model_sha256: str | None = None,
                       value: str = "probability") -> list[float]:
        """Scores (``probability`` or ``logit``) logged in [since, until)."""
        if value not in ("probability", "logit"):
            raise StoreError("value must be 'probability' or 'logit'.")
        column = _S.probability if value == "probability" else _S.logit
        q = sa.select(column).where(_S.scored_at >= parse_time(since, what="start time"),
                                    _S.scored_at < parse_time(until, what="end time"))
        if model_sha256:
            q = q.where(_S.model_sha256 == model_sha256)
        return [float(v) for v in self.db.execute(q).scalars()]

    def default_windows(self, recent_days: int = 7, reference_days: int = 28) -> tuple[Window, Window]:
        """(reference, recent): the last ``recent_days`` and the ``reference_days`` before them."""
        now = self.now()
        start = now - _dt.timedelta(days=recent_days)
        return (iso(start - _dt.timedelta(days=reference_days)), iso(start)), (iso(start), iso(now))

    def drift(self, reference_window: Window | None = None, recent_window: Window | None = None, *,
              model_sha256: str | None = None, value: str = "probability", bins: int = 10,
              min_samples: int = 30) -> dict[str, Any]:
        """PSI and KS of the recent window's scores against the reference window's.

        Windows are ``(since, until)`` pairs (ISO strings or datetimes, until
        exclusive); by default the last 7 days against the 28 before. Pass
        ``model_sha256`` so a model change is not mistaken for drift. With fewer
        than ``min_samples`` scores in either window the figures are None and
        ``insufficient_data`` is True.
        """
        default_ref, default_recent = self.default_windows()
        reference_window = reference_window or default_ref
        recent_window = recent_window or default_recent
        ref = self.scores_between(*reference_window, model_sha256=model_sha256, value=value)
        cur = self.scores_between(*recent_window, model_sha256=model_sha256, value=value)
        out: dict[str, Any] = {
            "reference_window": [parse_time(t) for t in reference_window],
            "recent_window": [parse_time(t) for t in recent_window],
            "n_reference": len(ref), "n_recent": len(cur), "value": value,
            "psi": None, "ks": None, "ks_pvalue": None, "alert": "ok",
            "thresholds": {"warn": PSI_WARN, "alert": PSI_ALERT},
            "insufficient_data": min(len(ref), len(cur)) < max(1, int(min_samples)),
        }
        if out["insufficient_data"]:
            return out
        from scipy.stats import ks_2samp

        out["psi"] = psi(ref, cur, bins=bins)
        ks = ks_2samp(ref, cur)
        out["ks"], out["ks_pvalue"] = float(ks.statistic), float(ks.pvalue)
        if not math.isfinite(out["ks_pvalue"]):
            out["ks_pvalue"] = None
        out["alert"] = drift_level(out["psi"])
        return out

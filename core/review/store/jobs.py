"""Owner of ``job_leases``: one holder at a time per background job, across processes and replicas.

Why: learning from labels (``core.review.actions.learn``) and recomputing the queue's priorities
must run once however many dashboard processes share the database. The rule is the claim's:
a lease has a holder and an expiry taken from the store's clock (PostgreSQL's server clock, so
replicas agree), is taken in one write transaction (SQLite ``BEGIN IMMEDIATE``; PostgreSQL locks
the job's row ``FOR UPDATE``), is renewed while the job runs, and is released at the end with a
*marker* saying what the run finished (e.g. the label count it learned from). A holder that
crashed simply stops renewing: its lease runs out and the next caller takes it.

The only SQL that touches ``job_leases``.
"""
from __future__ import annotations

import datetime as _dt
import os
import socket
import uuid
from typing import Any

import sqlalchemy as sa

from core.review.store.base import StoreError, iso
from core.review.store.db import Database
from core.review.store.tables import job_leases

#: Longest a job lease may be taken for at once (renew to hold it longer).
MAX_JOB_LEASE_SECONDS = 3600.0


def new_holder(what: str = "job") -> str:
    """A holder name unique to this process and call: ``what@host:pid:random``."""
    return f"{what}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class JobsOwner:
    """The job lease table on one :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def _seconds(seconds: float) -> float:
        value = float(seconds)
        if not (0 < value <= MAX_JOB_LEASE_SECONDS):
            raise StoreError(f"A job lease lasts between 0 and {int(MAX_JOB_LEASE_SECONDS)} seconds.")
        return value

    def get(self, name: str) -> dict[str, Any] | None:
        """The job's row (``holder`` None when nobody holds it), or None when it never ran."""
        return self.db.row(sa.select(job_leases).where(job_leases.c.name == name))

    def acquire(self, name: str, holder: str, seconds: float) -> bool:
        """Take the job's lease unless someone else holds it unexpired; True when ``holder`` now holds it."""
        seconds = self._seconds(seconds)
        with self.db.write():
            self.db.insert_ignore(job_leases, {"name": name}, keys=("name",))
            row = self.db.row(sa.select(job_leases).where(job_leases.c.name == name).with_for_update())
            now = self.db.now()
            if row["holder"] not in (None, holder) and row["expires_at"] > iso(now):
                return False
            self.db.execute(job_leases.update().where(job_leases.c.name == name)
                            .values(holder=holder, expires_at=iso(now + _dt.timedelta(seconds=seconds))))
            return True

    def renew(self, name: str, holder: str, seconds: float) -> bool:
        """Extend one's own lease; False when it was lost (expired and taken over)."""
        seconds = self._seconds(seconds)
        with self.db.write():
            now = self.db.now()
            done = self.db.execute(job_leases.update().where(job_leases.c.name == name,
                                                             job_leases.c.holder == holder)
                                   .values(expires_at=iso(now + _dt.timedelta(seconds=seconds))))
            return done.rowcount == 1

    def release(self, name: str, holder: str, *, marker: str | None = None) -> bool:
        """Give the lease back; ``marker`` records what the finished run did (kept when None)."""
        values: dict[str, Any] = {"holder": None, "expires_at": None}
        with self.db.write():
            if marker is not None:
                values.update(done_marker=str(marker), done_at=self.db.now_iso())
            done = self.db.execute(job_leases.update().where(job_leases.c.name == name,
                                                             job_leases.c.holder == holder).values(**values))
            return done.rowcount == 1

    def mark(self, name: str, marker: str) -> None:
        """Record ``marker`` as done without holding the lease (a run that needed no work)."""
        with self.db.write():
            self.db.insert_ignore(job_leases, {"name": name}, keys=("name",))
            self.db.execute(job_leases.update().where(job_leases.c.name == name)
                            .values(done_marker=str(marker), done_at=self.db.now_iso()))

    def running(self, name: str) -> dict[str, Any] | None:
        """The job's row while someone holds it unexpired, else None."""
        row = self.get(name)
        if row is None or row["holder"] is None or row["expires_at"] <= self.db.now_iso():
            return None
        return row

"""Connection, transactions, clock and errors shared by every store module.

One SQLite file, opened through sqlite-utils on a connection we configure
ourselves: WAL (readers never block the writer), foreign keys on, a busy
timeout so concurrent processes wait instead of failing, and explicit
``BEGIN IMMEDIATE`` write transactions so a read-then-write (a claim) can
never interleave with another process's write.
"""
from __future__ import annotations

import datetime as _dt
import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import sqlite_utils

from core.errors import DetectorError

#: Seconds a connection waits for another process's write lock before giving up.
BUSY_TIMEOUT_S = 30.0
#: Default lease on a claimed item and default undo window (both configurable).
DEFAULT_LEASE_SECONDS = 600.0
DEFAULT_UNDO_WINDOW_SECONDS = 600.0

TIERS = ("real", "review", "fake")
LABELS = ("real", "fake", "unsure")

Clock = Callable[[], _dt.datetime]


class StoreError(DetectorError):
    """A review-store request that cannot be honoured (message is for analysts)."""

    code = "store_error"


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def iso(moment: _dt.datetime) -> str:
    """Fixed-width UTC ISO-8601 (``2026-01-02T03:04:05.000006Z``) so strings sort as times."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | _dt.datetime | _dt.date | None, *, what: str = "time") -> str | None:
    """Normalise a user-supplied time (ISO string, date or datetime; naive = UTC) to :func:`iso`."""
    if value is None or value == "":
        return None
    if isinstance(value, _dt.datetime):
        return iso(value)
    if isinstance(value, _dt.date):
        return iso(_dt.datetime(value.year, value.month, value.day, tzinfo=_dt.timezone.utc))
    try:
        parsed = _dt.datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise StoreError(f"Not a valid {what}: {value!r} (use ISO-8601, e.g. 2026-01-31 or 2026-01-31T12:00:00Z)") from None
    return iso(parsed)


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: the driver never opens transactions behind our back;
    # we issue BEGIN IMMEDIATE / COMMIT explicitly.
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class StoreBase:
    """Owns the connection; subclasses (the mixins) add the domain methods.

    One instance may be shared by threads (calls are serialised by a lock);
    separate processes each open their own instance on the same file.
    """

    def __init__(self, db_path: str | os.PathLike, *, clock: Clock | None = None,
                 synchronous: str = "FULL") -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise StoreError("synchronous must be FULL, NORMAL or EXTRA")
        self.db_path = Path(db_path)
        if self.db_path.exists() and self.db_path.is_dir():
            raise StoreError(f"Expected a database file but got a folder: {self.db_path}")
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._clock: Clock = clock or utc_now
        self._lock = threading.RLock()
        self._depth = 0
        try:
            conn = _connect(self.db_path)
            self.db = sqlite_utils.Database(conn, execute_plugins=False)
            self.db.enable_wal()
            conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.db_path} is not a usable SQLite database ({exc}).") from None
        self.conn = conn

    # -- lifecycle -------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- time ------------------------------------------------------------
    def now(self) -> _dt.datetime:
        moment = self._clock()
        return moment if moment.tzinfo else moment.replace(tzinfo=_dt.timezone.utc)

    def now_iso(self) -> str:
        return iso(self.now())

    # -- transactions ----------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front (``BEGIN IMMEDIATE``); nested calls use savepoints.

        Taking the write lock before reading is what makes claim-next atomic
        across processes: nobody else can write between our SELECT and UPDATE.
        """
        with self._lock:
            if self._depth:
                name = f"sp{self._depth}"
                self.conn.execute(f"SAVEPOINT {name}")
                self._depth += 1
                try:
                    yield self.conn
                except BaseException as exc:
                    if self.conn.in_transaction:
                        self.conn.execute(f"ROLLBACK TO {name}")
                        self.conn.execute(f"RELEASE {name}")
                    if isinstance(exc, sqlite3.IntegrityError):
                        raise StoreError(f"Refused by the database: {exc}") from None
                    raise
                else:
                    self.conn.execute(f"RELEASE {name}")
                finally:
                    self._depth -= 1
                return
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreError(f"The review database is busy or unavailable ({exc}); try again.") from None
            self._depth = 1
            try:
                yield self.conn
            except sqlite3.IntegrityError as exc:
                self._rollback()
                raise StoreError(f"Refused by the database: {exc}") from None
            except BaseException:
                self._rollback()
                raise
            else:
                try:
                    self.conn.execute("COMMIT")
                except sqlite3.OperationalError as exc:
                    self._rollback()
                    raise StoreError(f"Could not save to the review database ({exc}); nothing was changed.") from None
            finally:
                self._depth = 0

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for multi-query reads (no lock taken in WAL mode)."""
        with self._lock:
            if self._depth:
                yield self.conn
                return
            self.conn.execute("BEGIN")
            self._depth = 1
            try:
                yield self.conn
            finally:
                self._depth = 0
                self._rollback()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group many calls into one transaction (one commit), e.g. scoring a folder.

        A failing call inside the batch is rolled back on its own (savepoint);
        the batch commits whatever succeeded when the block ends normally.
        """
        with self._write():
            yield

    def _rows(self, sql: str, params: tuple | dict = ()) -> list[dict[str, Any]]:
        cur = self.conn.execute(sql, params)
        keys = [d[0] for d in cur.description]
        return [dict(zip(keys, row)) for row in cur.fetchall()]

    def _row(self, sql: str, params: tuple | dict = ()) -> dict[str, Any] | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

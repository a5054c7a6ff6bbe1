"""The one connection and transaction of a store, on SQLite or PostgreSQL (SQLAlchemy Core).

Why one place: every owner (items, queue, labels, exports, monitoring) runs
its SQL through :class:`Database`, so the rules that make concurrent
reviewers safe are written once:

* **SQLite** (a path, the default): WAL so readers never block the writer,
  foreign keys on, a busy timeout so processes wait instead of failing, and
  ``BEGIN IMMEDIATE`` write transactions, so a read-then-write (a claim) can
  never interleave with another process's write.
* **PostgreSQL** (a ``postgresql+psycopg://`` URL): READ COMMITTED write
  transactions in which owners lock what they change (``FOR UPDATE``, ``SKIP
  LOCKED`` for claims, :meth:`Database.lock` per item), and REPEATABLE READ
  snapshots for multi-query reads.

The connection runs in driver autocommit and this class issues ``BEGIN`` /
``COMMIT`` / ``SAVEPOINT`` itself: SQLAlchemy cannot otherwise start SQLite's
``BEGIN IMMEDIATE``. Any database failure leaves here as :class:`StoreError`
with a readable message, after the transaction was rolled back.

Time: an injected ``clock`` is used as is (tests drive leases with it on both
databases). Without one, SQLite uses this machine's UTC clock and PostgreSQL
the database server's (``clock_timestamp()``), so several app servers agree
on when a lease runs out.
"""
from __future__ import annotations

import datetime as _dt
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import NullPool

from core.review.store.base import BUSY_TIMEOUT_S, Clock, StoreError, iso, utc_now

SQLITE, POSTGRESQL = "sqlite", "postgresql"
#: How many busy timeouts a SQLite write transaction waits out before giving up.
BEGIN_ATTEMPTS = 3


def is_url(target: str | os.PathLike) -> bool:
    """A database URL (``dialect[+driver]://…``) rather than a file path."""
    return "://" in str(target)


def describe(url: sa.URL) -> str:
    """The URL without its password, for messages."""
    return url.render_as_string(hide_password=True)


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def store_error(exc: sa_exc.SQLAlchemyError) -> StoreError:
    """The readable form of a database failure (the transaction is already rolled back)."""
    if isinstance(exc, sa_exc.IntegrityError):
        return StoreError(f"Refused by the database: {_first_line(exc)}")
    if isinstance(exc, sa_exc.OperationalError):
        return StoreError(f"The review database is busy or unavailable ({_first_line(exc)}); nothing was changed. "
                          "Try again.")
    return StoreError(f"The review database refused the request ({_first_line(exc)}); nothing was changed.")


def _sqlite_engine(path: Path, synchronous: str) -> sa.Engine:
    engine = sa.create_engine(f"sqlite+pysqlite:///{path}", poolclass=NullPool, isolation_level="AUTOCOMMIT",
                              connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_conn, _record) -> None:  # noqa: ANN001 - DB-API connection
        dbapi_conn.isolation_level = None  # we issue BEGIN IMMEDIATE / COMMIT ourselves
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute(f"PRAGMA synchronous = {synchronous}")
        cur.close()

    return engine


class Database:
    """One connection (serialised between threads by a lock), its transactions and its clock."""

    def __init__(self, target: str | os.PathLike, *, clock: Clock | None = None, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise StoreError("synchronous must be FULL, NORMAL or EXTRA")
        self._clock = clock
        self._lock = threading.RLock()
        self._depth = 0
        self.path: Path | None = None
        if is_url(target):
            try:
                self.url = sa.make_url(str(target))
            except sa_exc.ArgumentError:
                raise StoreError(f"Not a database URL: {target!r} (expected e.g. "
                                 "postgresql+psycopg://user:password@host:5432/dbname).") from None
            if self.url.get_backend_name() == SQLITE and self.url.database:
                target = self.url.database  # sqlite:///path is just a path
            elif self.url.get_backend_name() != POSTGRESQL:
                raise StoreError(f"Unsupported database {self.url.get_backend_name()!r}: use a SQLite file path or "
                                 "a postgresql+psycopg:// URL.")
        if not is_url(target):
            self.path = Path(target)
            if self.path.is_dir():
                raise StoreError(f"Expected a database file but got a folder: {self.path}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.url = sa.make_url(f"sqlite+pysqlite:///{self.path}")
            self.engine = _sqlite_engine(self.path, synchronous.upper())
        else:
            if self.url.drivername == POSTGRESQL:
                self.url = self.url.set(drivername="postgresql+psycopg")
            self.engine = sa.create_engine(self.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self.dialect = self.engine.dialect.name
        try:
            self.conn = self.engine.connect()
            if self.dialect == SQLITE:  # fail now, clearly, on a file that is not a database
                self.conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").fetchall()
        except sa_exc.SQLAlchemyError as exc:
            self.engine.dispose()
            if self.dialect == SQLITE:
                raise StoreError(f"{self.path} is not a usable SQLite database ({_first_line(exc)}).") from None
            raise StoreError(f"Cannot reach the review database at {describe(self.url)} ({_first_line(exc)}). "
                             "Check the URL, the password and that the server is running.") from None

    # -- lifecycle -------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            try:
                self.conn.close()
            finally:
                self.engine.dispose()

    def where(self) -> str:
        """Where the data lives, for messages and ``repr`` (never the password)."""
        return str(self.path) if self.path is not None else describe(self.url)

    # -- time ------------------------------------------------------------
    def now(self) -> _dt.datetime:
        """The injected clock, else the database server's clock (PostgreSQL) or this machine's (SQLite)."""
        if self._clock is not None:
            moment = self._clock()
            return moment if moment.tzinfo else moment.replace(tzinfo=_dt.timezone.utc)
        if self.dialect == POSTGRESQL:
            with self._lock:
                self._fresh()
                moment = self._guarded(lambda: self.conn.exec_driver_sql("SELECT clock_timestamp()").scalar_one())
            return moment.astimezone(_dt.timezone.utc)
        return utc_now()

    def now_iso(self) -> str:
        return iso(self.now())

    # -- transactions ----------------------------------------------------
    def _sql(self, statement: str) -> None:
        self.conn.exec_driver_sql(statement)

    def _guarded(self, fn):
        try:
            return fn()
        except sa_exc.SQLAlchemyError as exc:
            raise store_error(exc) from None

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A write transaction (nested calls become savepoints); a failure rolls it back whole.

        SQLite takes the write lock up front (``BEGIN IMMEDIATE``), which is what
        makes a claim atomic across processes there; on PostgreSQL the owners
        lock the rows they read-then-write.
        """
        with self._lock:
            if self._depth:
                name = f"sp{self._depth}"
                self._guarded(lambda: self._sql(f"SAVEPOINT {name}"))
                self._depth += 1
                try:
                    yield self.conn
                except BaseException as exc:
                    self._guarded(lambda: (self._sql(f"ROLLBACK TO SAVEPOINT {name}"),
                                           self._sql(f"RELEASE SAVEPOINT {name}")))
                    if isinstance(exc, sa_exc.SQLAlchemyError):
                        raise store_error(exc) from None
                    raise
                else:
                    self._guarded(lambda: self._sql(f"RELEASE SAVEPOINT {name}"))
                finally:
                    self._depth -= 1
                return
            self._begin_write()
            self._depth = 1
            try:
                yield self.conn
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sa_exc.SQLAlchemyError):
                    raise store_error(exc) from None
                raise
            else:
                try:
                    self._sql("COMMIT")
                except sa_exc.SQLAlchemyError as exc:
                    self._rollback()
                    raise StoreError(f"Could not save to the review database ({_first_line(exc)}); "
                                     "nothing was changed.") from None
            finally:
                self._depth = 0

    def _fresh(self) -> None:
        """Replace a connection the server dropped (a restart, an idle timeout, a terminated backend).

        SQLAlchemy marks a connection invalidated when a statement fails with a disconnect; the call
        that hit it failed with a clear :class:`StoreError` (and rolled nothing half-way), and the next
        call starts on a new connection here. Only between transactions.
        """
        if self._depth or not (self.conn.invalidated or self.conn.closed):
            return
        try:
            self.conn.close()
        except sa_exc.SQLAlchemyError:
            pass
        try:
            self.conn = self.engine.connect()
        except sa_exc.SQLAlchemyError as exc:
            raise StoreError(f"Cannot reach the review database at {self.where()} ({_first_line(exc)}). "
                             "Check that the server is running.") from None

    def _begin(self, statement: str) -> None:
        """Open a transaction; a connection found dropped at this point (nothing done yet) is replaced
        and the ``BEGIN`` tried once more."""
        self._fresh()
        try:
            self._sql(statement)
        except sa_exc.DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            self._fresh()
            self._sql(statement)

    def _begin_write(self) -> None:
        """``BEGIN IMMEDIATE`` (SQLite) or ``BEGIN``; on SQLite a busy timeout is retried a few times.

        Safe to retry: nothing was done yet. SQLite's busy handler is not fair,
        so under heavy load one of many writers can wait out a whole timeout.
        """
        for attempt in range(BEGIN_ATTEMPTS):
            try:
                self._begin("BEGIN IMMEDIATE" if self.dialect == SQLITE else "BEGIN")
                return
            except sa_exc.OperationalError as exc:
                if self.dialect != SQLITE or attempt == BEGIN_ATTEMPTS - 1 or "locked" not in str(exc.orig):
                    raise store_error(exc) from None
            except sa_exc.SQLAlchemyError as exc:
                raise store_error(exc) from None

    def _rollback(self) -> None:
        try:
            self._sql("ROLLBACK")
        except sa_exc.SQLAlchemyError:
            pass  # no transaction open (or the connection is gone): nothing to undo

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A consistent snapshot for multi-query reads (takes no write lock on either database)."""
        with self._lock:
            if self._depth:
                yield self.conn
                return
            self._guarded(lambda: self._begin(
                "BEGIN" if self.dialect == SQLITE else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))
            self._depth = 1
            try:
                yield self.conn
            except sa_exc.SQLAlchemyError as exc:
                raise store_error(exc) from None
            finally:
                self._depth = 0
                self._rollback()

    def lock(self, key: str) -> None:
        """Serialise writers on ``key`` (e.g. one item's labels) until the transaction ends.

        PostgreSQL: a transaction-scoped advisory lock. SQLite: nothing to do,
        ``BEGIN IMMEDIATE`` already admits one writer at a time.
        """
        if self.dialect == POSTGRESQL:
            self.conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key})

    # -- statements --------------------------------------------------------
    def execute(self, statement: sa.Executable, params: Mapping[str, Any] | list | None = None) -> sa.CursorResult:
        with self._lock:
            self._fresh()
            return self._guarded(lambda: self.conn.execute(statement, params) if params is not None
                                 else self.conn.execute(statement))

    def rows(self, statement: sa.Executable, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return [dict(r) for r in self.execute(statement, params).mappings().all()]

    def row(self, statement: sa.Executable, params: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        found = self.execute(statement, params).mappings().first()
        return dict(found) if found is not None else None

    def scalar(self, statement: sa.Executable, params: Mapping[str, Any] | None = None) -> Any:
        return self.execute(statement, params).scalar()

    def upsert(self, table: sa.Table, values: Mapping[str, Any], keys: tuple[str, ...]) -> None:
        """Insert a row or update it in place on a key conflict (both dialects spell it the same)."""
        if self.dialect == POSTGRESQL:
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(table).values(**values)
        stmt = stmt.on_conflict_do_update(index_elements=list(keys),
                                          set_={k: stmt.excluded[k] for k in values if k not in keys})
        self.execute(stmt)

    def insert_ignore(self, table: sa.Table, values: Mapping[str, Any], keys: tuple[str, ...]) -> None:
        """Insert a row unless one with the same key exists (both dialects)."""
        if self.dialect == POSTGRESQL:
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        self.execute(insert(table).values(**values).on_conflict_do_nothing(index_elements=list(keys)))

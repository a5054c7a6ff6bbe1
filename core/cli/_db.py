"""The ``--db`` option every store-backed command shares, and the one way it is opened.

Why one place: a mistyped path must not silently create folders and an empty
database (then print zeros); creating a new SQLite file is asked for with
``--create``. ``--db`` takes a SQLite path or a database URL
(``postgresql+psycopg://user:pw@host:5432/db``; a URL is never created);
without it ``$LADEDA_DATABASE_URL``, else ``review.sqlite`` in the data
directory, is used. Every command that takes ``--db`` goes through
:func:`open_db`, which hands over to :func:`core.review.store.open_store`.
"""
from __future__ import annotations

import argparse

DB_HELP = ("review database: a SQLite file path or a postgresql+psycopg:// URL (default: $LADEDA_DATABASE_URL, "
           "else review.sqlite in $LADEDA_DATA_DIR or ./runtime)")


def add_db_option(p: argparse.ArgumentParser, *, help: str = DB_HELP) -> None:
    """``--db`` and ``--create`` on a (sub)command parser."""
    p.add_argument("--db", help=help, default=argparse.SUPPRESS)
    p.add_argument("--create", action="store_true", default=argparse.SUPPRESS,
                   help="create the SQLite file (and its folder) when it does not exist yet")


def open_db(args: argparse.Namespace, **kwargs):
    """Open the store named by ``args.db`` (path or URL) or the default one, refusing a missing SQLite path.

    The default database is created on first use, as the dashboard does.
    """
    from core.review.store import open_store

    return open_store(getattr(args, "db", None), create=bool(getattr(args, "create", False)), **kwargs)

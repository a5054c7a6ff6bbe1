"""The ``--db`` option every store-backed command shares, and the one way it is opened.

Why one place: a mistyped path must not silently create folders and an empty
database (then print zeros); creating a new database is asked for with
``--create``. Every command that takes ``--db`` goes through :func:`open_db`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

DB_HELP = ("review database: a SQLite file path (default: review.sqlite in $LADEDA_DATA_DIR or ./runtime)")


def add_db_option(p: argparse.ArgumentParser, *, help: str = DB_HELP) -> None:
    """``--db`` and ``--create`` on a (sub)command parser."""
    p.add_argument("--db", help=help, default=argparse.SUPPRESS)
    p.add_argument("--create", action="store_true", default=argparse.SUPPRESS,
                   help="create the database (and its folder) when it does not exist yet")


def open_db(args: argparse.Namespace, **kwargs):
    """Open the store named by ``args.db`` (or the default one), refusing a path that does not exist.

    The default database in the data directory is created on first use, as the dashboard does.
    """
    from core.review.store import ReviewStore, StoreError

    target = getattr(args, "db", None)
    if target is None:
        return ReviewStore.open(None, **kwargs)
    path = Path(target)
    if not path.exists() and not getattr(args, "create", False):
        where = "its folder does not exist" if not path.parent.exists() else "the file does not exist"
        raise StoreError(f"No review database at {path} ({where}). Check the path, or add --create to make a "
                         "new one.")
    return ReviewStore.open(path, **kwargs)

"""Where things live: the bundled models and the runtime data directory.

Environment variables override the defaults so a deployment can move state
without code changes: ``LADEDA_MODEL`` (checkpoint to serve),
``LADEDA_DATA_DIR`` (SQLite file, image store, exports),
``LADEDA_DATABASE_URL`` (a PostgreSQL URL instead of the SQLite file, for the
CLI and the dashboard) and ``LADEDA_IMAGE_DIR`` (the content-addressed image
folder, e.g. one shared by several dashboard replicas).
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "data" / "models"
#: The bundled default checkpoint (LaDeDa9 trained on the shared corpus).
DEFAULT_MODEL = MODELS_DIR / "ladeda9.pt"
#: The bundled student distilled from it.
DEFAULT_TINY_MODEL = MODELS_DIR / "tiny_ladeda.pt"
#: The read-only research data beside the checkout (``$LADEDA_SHARED_DIR`` to point elsewhere, as the tests do).
SHARED_DIR = Path(os.environ.get("LADEDA_SHARED_DIR") or REPO_ROOT.parent / "shared")


def default_model_path() -> Path:
    """The checkpoint served when none is named: $LADEDA_MODEL or the bundled one."""
    env = os.environ.get("LADEDA_MODEL")
    return Path(env) if env else DEFAULT_MODEL


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """Runtime state directory, created on first use: flag > $LADEDA_DATA_DIR > ./runtime."""
    path = Path(override or os.environ.get("LADEDA_DATA_DIR") or (REPO_ROOT / "runtime"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_db_path(override: str | os.PathLike | None = None) -> Path:
    return data_dir(override) / "review.sqlite"


def database_url() -> str | None:
    """``$LADEDA_DATABASE_URL`` (e.g. ``postgresql+psycopg://user:pw@host:5432/db``), or None."""
    return (os.environ.get("LADEDA_DATABASE_URL") or "").strip() or None


def default_db_target() -> str | Path:
    """The review database used when none is named: $LADEDA_DATABASE_URL, else the SQLite file."""
    return database_url() or default_db_path()


def image_dir_override() -> Path | None:
    """``$LADEDA_IMAGE_DIR``: where image bytes live when no ``image_dir`` is passed (None: the default)."""
    value = (os.environ.get("LADEDA_IMAGE_DIR") or "").strip()
    return Path(value) if value else None

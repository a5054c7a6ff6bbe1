"""Where things live: the bundled models and the runtime data directory.

Environment variables override the defaults so a deployment can move state
without code changes: ``LADEDA_MODEL`` (checkpoint to serve) and
``LADEDA_DATA_DIR`` (SQLite file, image store, exports).
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
SHARED_DIR = REPO_ROOT.parent / "shared"


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

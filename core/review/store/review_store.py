"""``ReviewStore``: the one object the CLI and the dashboard talk to.

It composes the layers (items → queue → labels → exports, plus monitoring)
over one SQLite file and an image folder beside it, and brings the schema up
to date on open. Privacy mode is sticky per database: once a file was opened
with ``privacy_mode=True`` every later opener keeps storing thumbnails only,
so a script that forgets the flag cannot start keeping originals.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from core.review.artifacts import ArtifactStore
from core.review.store.base import DEFAULT_LEASE_SECONDS, DEFAULT_UNDO_WINDOW_SECONDS, Clock, StoreError
from core.review.store.blobs import BlobStore
from core.review.store.exports import ExportsMixin
from core.review.store.monitor import MonitorMixin
from core.review.store.schema import migrate, schema_version


class ReviewStore(MonitorMixin, ExportsMixin):
    """Review queue, labels, score log and exports on one SQLite file (safe for many processes)."""

    def __init__(self, db_path: str | os.PathLike, *, image_dir: str | os.PathLike | None = None,
                 privacy_mode: bool = False, lease_seconds: float = DEFAULT_LEASE_SECONDS,
                 undo_window_seconds: float = DEFAULT_UNDO_WINDOW_SECONDS, clock: Clock | None = None,
                 synchronous: str = "FULL", artifact_dir: str | os.PathLike | None = None) -> None:
        super().__init__(db_path, clock=clock, synchronous=synchronous)
        try:
            migrate(self.conn)
            if privacy_mode:
                with self._write() as conn:
                    conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('privacy_mode', '1')")
            row = self.conn.execute("SELECT value FROM settings WHERE key = 'privacy_mode'").fetchone()
        except BaseException:
            self.conn.close()
            raise
        self.privacy_mode = bool(row and row[0] == "1")
        self.image_dir = Path(image_dir) if image_dir is not None else self.db_path.parent / "images"
        self.blobs = BlobStore(self.image_dir)
        #: Evidence and features per (item, model), beside the images (see core.review.artifacts).
        self.artifact_dir = Path(artifact_dir) if artifact_dir is not None else self.image_dir.parent / "artifacts"
        self.artifacts = ArtifactStore(self.artifact_dir)
        self.lease_seconds = self._positive(lease_seconds, "lease_seconds")
        self.undo_window_seconds = self._positive(undo_window_seconds, "undo_window_seconds")

    @classmethod
    def open(cls, db_path: str | os.PathLike | None = None, **kwargs: Any) -> "ReviewStore":
        """Open (creating on first use) ``db_path`` or the default database in the data directory."""
        if db_path is None:
            from core.paths import default_db_path

            db_path = default_db_path()
        return cls(db_path, **kwargs)

    @property
    def schema_version(self) -> int:
        with self._lock:
            return schema_version(self.conn)

    @staticmethod
    def _positive(value: float, name: str) -> float:
        value = float(value)
        if not value > 0:
            raise StoreError(f"{name} must be positive.")
        return value

    def __repr__(self) -> str:
        return f"ReviewStore({str(self.db_path)!r}, privacy_mode={self.privacy_mode})"

"""Batch results into the review store, idempotent by (sha256, model weights).

Recording goes through :func:`core.scoring.analysis.record_analysis`, the same
call ``score --db`` makes, so a batch queues review-tier items exactly as a
one-by-one scoring does; an image already scored by the same model file is left
as it is (a re-run of a batch adds nothing).
"""
from __future__ import annotations

import argparse
from typing import Any

RECORDED, ALREADY_STORED = "recorded", "already_stored"


def open_store(target: str):
    """Open the store a worker writes to (the driver has already checked or created it)."""
    from core.cli._db import open_db

    return open_db(argparse.Namespace(db=target, create=True))


def ingest(store: Any, analysis: Any, *, name: str, uploader: str | None = None) -> str:
    """Record one analysis unless this image already has a scoring by this model; returns what happened."""
    if store.has_scoring(analysis.score.sha256, analysis.score.model["sha256"]):
        return ALREADY_STORED
    from core.scoring.analysis import record_analysis

    record_analysis(store, analysis, name=name, uploader=uploader)
    return RECORDED

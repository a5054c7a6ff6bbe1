"""The per-row work of a batch, shared by both engines: decode, analyse, build the row, ingest.

A :class:`BatchScorer` loads the model (and guardrails) once; the local engine
makes one, Ray Data makes one per actor (``map_batches`` with a callable
class). Each row is decoded and scored on its own inside the job, so one
corrupt file yields one error row and the run goes on.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import pyarrow as pa

from core.batch.rows import INGEST_COLUMN, error_row, row_from_analysis, to_table


@dataclass(frozen=True)
class ScorerConfig:
    """Everything a worker needs to build its scorer (plain values: it travels to Ray actors)."""

    model: str  #: absolute checkpoint path, resolved on the driver
    guardrails: bool = True
    db: str | None = None  #: review store to ingest into (checked or created on the driver)
    uploader: str | None = None
    precision: str | None = None  #: None: $LADEDA_PRECISION or this worker's CPU (core.model.precision)
    threads: int | None = None  #: torch threads per scorer (Ray: the actor's CPUs)

    def to_kwargs(self) -> dict[str, Any]:
        return asdict(self)


class BatchScorer:
    """Callable: a batch of paths (Arrow table or list) → an Arrow table of result rows."""

    def __init__(self, **config: Any) -> None:
        self.config = ScorerConfig(**config)
        if self.config.threads:
            import torch

            torch.set_num_threads(int(self.config.threads))
        from core.scoring.detector import Detector

        self.detector = Detector.load(self.config.model, precision=self.config.precision)
        self.store = None
        if self.config.db is not None:
            from core.batch.ingest import open_store

            self.store = open_store(self.config.db)

    def score_path(self, path: str) -> dict[str, Any]:
        """One row (with what ingest did under the internal ingest column)."""
        from core.errors import DetectorError
        from core.scoring.analysis import analyse

        try:
            analysis = analyse(self.detector, path, name=path, guardrails=self.config.guardrails)
        except DetectorError as exc:
            return error_row(path, str(exc))
        except Exception as exc:  # a file that trips a library bug must not stop a 100k-image run
            return error_row(path, f"The image could not be scored ({type(exc).__name__}: {exc}).")
        row = row_from_analysis(path, analysis)
        if self.store is not None:
            from core.batch.ingest import ingest

            try:
                row[INGEST_COLUMN] = ingest(self.store, analysis, name=os.path.basename(path),
                                            uploader=self.config.uploader)
            except DetectorError as exc:  # the row is scored; say the store refused it
                row[INGEST_COLUMN] = f"error: {exc}"
        return row

    def score_paths(self, paths: Iterable[str]) -> pa.Table:
        return to_table([self.score_path(str(p)) for p in paths], wire=True)

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Ray Data entry point (``batch_format="pyarrow"``): a table with a ``path`` column."""
        return self.score_paths(batch.column("path").to_pylist())

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

"""Streaming RESULTS.parquet: rows are appended as chunks arrive, the file appears whole or not at all."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from core.batch.rows import INGEST_COLUMN, SCHEMA


#: Rows per Parquet row group (chunks are buffered up to this).
ROW_GROUP = 1024


class ResultsWriter:
    """Context manager: ``write(table)`` chunks, renamed into place on a clean exit."""

    def __init__(self, out: str | os.PathLike, row_group: int = ROW_GROUP) -> None:
        self.out = Path(out)
        self.rows = 0
        self.row_group = row_group
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._tmp: str | None = None
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> "ResultsWriter":
        self.out.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=self.out.parent)
        os.close(fd)
        self._writer = pq.ParquetWriter(self._tmp, SCHEMA)
        return self

    def write(self, table: pa.Table) -> None:
        if INGEST_COLUMN in table.column_names:
            table = table.drop_columns([INGEST_COLUMN])
        table = table.select(SCHEMA.names).cast(SCHEMA)
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= self.row_group:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.concat_tables(self._pending))
        self._pending, self._pending_rows = [], 0

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._flush()
        self._writer.close()
        if exc_type is None:
            os.chmod(self._tmp, 0o644)
            os.replace(self._tmp, self.out)
        else:
            os.unlink(self._tmp)


def read_results(path: str | os.PathLike) -> list[dict]:
    """All rows of a results file as dicts (for tests and small files)."""
    return pq.read_table(path).to_pylist()

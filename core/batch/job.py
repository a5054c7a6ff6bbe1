"""The one door for batch scoring (the CLI and the benchmark call :func:`run_batch`).

Lists the inputs, runs an engine, streams rows into RESULTS.parquet under a
progress bar, and returns a summary. Nothing here depends on the engine: both
yield the same rows in input order.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from core.batch.engines import ENGINES, RayOptions
from core.batch.ingest import ALREADY_STORED, RECORDED
from core.batch.inputs import BatchInputError, list_inputs
from core.batch.parquet import ResultsWriter
from core.batch.rows import INGEST_COLUMN
from core.batch.scorer import ScorerConfig

DEFAULT_BATCH_SIZE = 16


def run_batch(input: str | os.PathLike, out: str | os.PathLike, *, engine: str = "local",
              model: str | os.PathLike | None = None, db: str | None = None, uploader: str | None = None,
              guardrails: bool = True, batch_size: int = DEFAULT_BATCH_SIZE, precision: str | None = None,
              ray: RayOptions | None = None, progress: bool = True) -> dict[str, Any]:
    """Score every image of ``input`` into ``out``; returns counts and timing.

    ``db`` must already exist (the CLI checks it with ``open_db``, honouring ``--create``).
    """
    from tqdm import tqdm

    from core.model.checkpoint import load_checkpoint
    from core.paths import default_model_path

    if engine not in ENGINES:
        raise BatchInputError(f"Unknown engine {engine!r}; choose {' or '.join(ENGINES)}.")
    if batch_size < 1:
        raise BatchInputError("--batch-size must be at least 1.")
    paths = list_inputs(input)
    model_path = Path(model) if model else default_model_path()
    load_checkpoint(model_path)  # a bad model is refused here, once, not in every worker
    config = ScorerConfig(model=str(model_path.resolve()), guardrails=guardrails, db=db, uploader=uploader,
                          precision=precision)
    kwargs: dict[str, Any] = {"batch_size": batch_size}
    if engine == "ray":
        kwargs["options"] = ray or RayOptions()
    counts = {RECORDED: 0, ALREADY_STORED: 0, "store_errors": 0}
    errors = 0
    t0 = time.perf_counter()
    with ResultsWriter(out) as writer, tqdm(total=len(paths), desc=f"batch ({engine})", unit="img",
                                            disable=not progress, file=sys.stderr) as bar:
        for table in ENGINES[engine](paths, config, **kwargs):
            errors += table.num_rows - table.column("error").null_count
            if INGEST_COLUMN in table.column_names:
                for status in table.column(INGEST_COLUMN).to_pylist():
                    if status in counts:
                        counts[status] += 1
                    elif status:
                        counts["store_errors"] += 1
            writer.write(table)
            bar.update(table.num_rows)
    seconds = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "out": str(out), "engine": engine, "images": len(paths), "scored": len(paths) - errors, "errors": errors,
        "seconds": round(seconds, 3), "images_per_s": round(len(paths) / seconds, 3) if seconds > 0 else None,
    }
    if db is not None:
        summary.update(db=str(db), ingested=counts[RECORDED], already_stored=counts[ALREADY_STORED],
                       store_errors=counts["store_errors"])
    return summary

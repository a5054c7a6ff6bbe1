"""One Parquet row per input image: what a successful analysis carries, or the error.

The row builder reads only the analysis result (:class:`core.scoring.analysis.Analysis`),
so whatever the result learns to carry (e.g. ``score.pooled_features``) reaches
the row by adding one column here, for both engines at once.
"""
from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

#: Column order and types of RESULTS.parquet (identical for every engine).
SCHEMA = pa.schema([
    pa.field("path", pa.string(), nullable=False),
    pa.field("sha256", pa.string()),
    pa.field("logit", pa.float64()),
    pa.field("probability", pa.float64()),
    pa.field("tier", pa.string()),
    pa.field("reasons", pa.list_(pa.string())),
    pa.field("model_sha256", pa.string()),
    pa.field("calibration_version", pa.string()),
    pa.field("preprocess_fingerprint", pa.string()),
    pa.field("precision", pa.string()),
    pa.field("pooled_features", pa.list_(pa.float32())),  #: null until the model reports pooled features
    pa.field("error", pa.string()),
    #: JSON text, as ``score --json`` gives them: each part's logit and probability, the fusion weights
    pa.field("components", pa.string()),
    pa.field("ood", pa.string()),  #: JSON text: out-of-distribution distance, threshold, tripped
])

#: Internal column the engines carry back to the driver (what ingest did), never written to Parquet.
INGEST_COLUMN = "_ingest"
WIRE_SCHEMA = SCHEMA.append(pa.field(INGEST_COLUMN, pa.string()))

COLUMNS = tuple(SCHEMA.names)


def row_from_analysis(path: str, analysis: Any) -> dict[str, Any]:
    """The row of a scored image: the served verdict (:meth:`Analysis.verdict`, what ``score --json`` says)."""
    score = analysis.score
    pooled = getattr(score, "pooled_features", None)
    v = analysis.verdict()
    return {
        "path": path,
        "sha256": score.sha256,
        "logit": v["logit"],
        "probability": v["probability"],
        "tier": v["tier"],
        "reasons": v["reasons"],
        "model_sha256": score.model["sha256"],
        "calibration_version": v["calibration_version"],
        "preprocess_fingerprint": score.model["preprocess_fingerprint"],
        "precision": score.model.get("precision", "fp32"),
        "pooled_features": None if pooled is None else [float(x) for x in pooled],
        "error": None,
        "components": None if v["components"] is None else json.dumps(v["components"], sort_keys=True),
        "ood": None if v["ood"] is None else json.dumps(v["ood"], sort_keys=True),
    }


def error_row(path: str, message: str) -> dict[str, Any]:
    """The row of an image that could not be scored: only its path and why."""
    row = dict.fromkeys(COLUMNS)
    row.update(path=path, error=message)
    return row


def to_table(rows: list[dict[str, Any]], *, wire: bool = False) -> pa.Table:
    """Rows as an Arrow table with the fixed schema (``wire`` keeps the ingest column)."""
    schema = WIRE_SCHEMA if wire else SCHEMA
    return pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)

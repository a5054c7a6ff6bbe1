"""Calibration records: logit → probability maps stored with a checkpoint.

(Fitting, metrics and tiers are added on top of this module.)
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .errors import CalibrationError


def apply_record(record: dict[str, Any], logits: np.ndarray) -> np.ndarray:
    """Apply a stored calibration record to logits (vectorised)."""
    z = np.asarray(logits, dtype=np.float64)
    method = record.get("method")
    p = record.get("params") or {}
    if method == "temperature":
        return 1.0 / (1.0 + np.exp(-z / float(p["temperature"])))
    if method == "platt":
        return 1.0 / (1.0 + np.exp(-(float(p["a"]) * z + float(p["b"]))))
    if method == "isotonic":
        return np.interp(z, np.asarray(p["x"], dtype=np.float64), np.asarray(p["y"], dtype=np.float64))
    raise CalibrationError(f"Unknown calibration method {method!r}")

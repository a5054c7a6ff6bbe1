"""Calibration: fit a logit → probability map on labelled logits, and apply it.

Why: a detector's raw sigmoid is usually over-confident and its 0.5 point is
wherever training left it. A calibration *record* (a plain dict) says how to
map logits to probabilities analysts can trust, and is stored in the
checkpoint (``Checkpoint.calibration``) or on its own as JSON.

Record keys: ``method`` (temperature | platt | isotonic), ``params``
(temperature: ``{"temperature": T}``; platt: ``{"a", "b"}`` meaning
``sigmoid(a*logit + b)``; isotonic: ``{"x", "y"}`` interpolated with
``np.interp``), ``version`` (``cal-<method>-<8 hex of data hash>-<UTC time>``),
``fitted_at``, ``n``, ``n_real``, ``n_fake``, ``data_sha256``,
``metrics_before``/``metrics_after`` (on the fitting data), ``warnings``,
``context`` and, once tiers are chosen, ``tiers``.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import warnings as _warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.optimize import minimize_scalar

from core.errors import CalibrationError
from core.calibration.metrics import json_safe, metrics_row, sigmoid

METHODS = ("temperature", "platt", "isotonic")
SCHEMA_VERSION = 1
#: Temperature search range (log-spaced); a fit at a bound is reported as a warning.
TEMPERATURE_BOUNDS = (1e-2, 1e2)
#: Isotonic regression needs enough points per class to estimate a step function.
ISOTONIC_MIN_SAMPLES = 40
ISOTONIC_MIN_PER_CLASS = 10
#: Below this many samples isotonic maps are known to overfit (Niculescu-Mizil & Caruana 2005).
ISOTONIC_ADVISED_SAMPLES = 1000
#: Isotonic outputs are kept inside [EPS, 1-EPS]: a 0 or 1 on a finite sample is a claim of certainty.
ISOTONIC_EPS = 1e-3


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


# -- input checks ------------------------------------------------------------
def _validate(logits: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray,
              method: str) -> tuple[np.ndarray, np.ndarray]:
    if method not in METHODS:
        raise CalibrationError(f"Unknown calibration method {method!r}; choose one of {', '.join(METHODS)}.")
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if z.size != y.size:
        raise CalibrationError(f"{z.size} logits but {y.size} labels.")
    if not np.isfinite(z).all():
        raise CalibrationError("Some logits are NaN or infinite; re-score those images.")
    if y.size and not np.isin(y, (0, 1)).all():
        raise CalibrationError("Labels must be 0 (real) or 1 (fake).")
    y = y.astype(np.int64)
    n_fake = int(y.sum())
    n_real = int(y.size - n_fake)
    if n_real == 0 or n_fake == 0:
        raise CalibrationError(
            f"Calibration needs both real and fake examples; got {n_real} real and {n_fake} fake. "
            "Label some of the missing class first."
        )
    if method == "isotonic" and (y.size < ISOTONIC_MIN_SAMPLES or min(n_real, n_fake) < ISOTONIC_MIN_PER_CLASS):
        raise CalibrationError(
            f"Isotonic calibration needs at least {ISOTONIC_MIN_SAMPLES} examples with at least "
            f"{ISOTONIC_MIN_PER_CLASS} of each class; got {n_real} real and {n_fake} fake. "
            "Choose the temperature or Platt method for a set this small."
        )
    return z, y


def data_sha256(logits: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> str:
    """Order-independent hash of (logit, label) pairs, so the same data always has the same hash."""
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.int64).ravel()
    order = np.lexsort((y, z))
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(z[order]).astype("<f8").tobytes())
    h.update(np.ascontiguousarray(y[order]).astype("<i1").tobytes())
    return h.hexdigest()


# -- fitters ---------------------------------------------------------------
def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature T minimising the NLL of ``sigmoid(logit / T)`` (Guo et al. 2017).

    The NLL is convex in 1/T, hence unimodal in log T: a bounded scalar search finds it.
    """
    z = np.asarray(logits, dtype=np.float64)
    sign = np.where(np.asarray(labels) == 1, 1.0, -1.0)

    def loss(log_t: float) -> float:
        return float(np.mean(np.logaddexp(0.0, -sign * z * math.exp(-log_t))))

    lo, hi = (math.log(b) for b in TEMPERATURE_BOUNDS)
    res = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-7})
    return float(math.exp(res.x))


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(a, b) of ``sigmoid(a*logit + b)`` by logistic regression on the logit.

    Uses Platt's smoothed targets ((N+ + 1)/(N+ + 2) and 1/(N- + 2)), expressed as
    sample weights on duplicated rows, so separable data still gives a finite fit.
    """
    from sklearn.linear_model import LogisticRegression

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    n_fake, n_real = int(y.sum()), int((y == 0).sum())
    target = np.where(y == 1, (n_fake + 1.0) / (n_fake + 2.0), 1.0 / (n_real + 2.0))
    x = np.concatenate([z, z])[:, None]
    yy = np.concatenate([np.ones_like(y), np.zeros_like(y)])
    w = np.concatenate([target, 1.0 - target])
    model = LogisticRegression(C=np.inf, max_iter=1000, tol=1e-10)
    model.fit(x, yy, sample_weight=w)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def fit_isotonic(logits: np.ndarray, labels: np.ndarray) -> tuple[list[float], list[float]]:
    """Knots (x, y) of a non-decreasing step map from logit to probability (scikit-learn).

    Outputs are clipped to [ISOTONIC_EPS, 1-ISOTONIC_EPS]; beyond the knots the end values hold.
    """
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(increasing=True, out_of_bounds="clip", y_min=0.0, y_max=1.0)
    iso.fit(np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.float64))
    x = np.asarray(iso.X_thresholds_, dtype=np.float64)
    y = np.clip(np.asarray(iso.y_thresholds_, dtype=np.float64), ISOTONIC_EPS, 1.0 - ISOTONIC_EPS)
    return x.tolist(), y.tolist()


def _version(method: str, digest: str, when: _dt.datetime) -> str:
    return f"cal-{method}-{digest[:8]}-{when.strftime('%Y%m%d%H%M%S')}"


def fit_calibration(logits: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, method: str, *,
                    baseline: dict[str, Any] | None = None, context: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fit ``method`` on (logit, label) pairs and return the calibration record.

    ``metrics_before`` are those of ``baseline`` (the record the model had) or of
    the plain sigmoid; ``metrics_after`` those of the new map, both on the
    fitting data (in-sample). ``context`` (model sha, data path ...) is stored as is.
    Raises :class:`CalibrationError` on one-class data or too few points for isotonic.
    """
    z, y = _validate(logits, labels, method)
    warnings: list[str] = []
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        if method == "temperature":
            t = fit_temperature(z, y)
            params: dict[str, Any] = {"temperature": t}
            if not (TEMPERATURE_BOUNDS[0] * 1.01 < t < TEMPERATURE_BOUNDS[1] / 1.01):
                warnings.append(f"Temperature hit its search bound ({t:.3g}); the data may be separable or inverted.")
        elif method == "platt":
            a, b = fit_platt(z, y)
            params = {"a": a, "b": b}
            if a <= 0:
                warnings.append("Platt slope is not positive: higher logits mean *less* fake on this data.")
        else:
            xs, ys = fit_isotonic(z, y)
            params = {"x": xs, "y": ys}
            if y.size < ISOTONIC_ADVISED_SAMPLES:
                warnings.append(f"Isotonic fitted on {y.size} examples; below ~{ISOTONIC_ADVISED_SAMPLES} it tends "
                                "to overfit (prefer temperature or platt).")
    when = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    digest = data_sha256(z, y)
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "method": method,
        "params": params,
        "version": _version(method, digest, when),
        "fitted_at": when.isoformat(),
        "n": int(y.size),
        "n_real": int((y == 0).sum()),
        "n_fake": int(y.sum()),
        "data_sha256": digest,
    }
    before = apply_record(baseline, z) if baseline else sigmoid(z)
    record["metrics_before"] = metrics_row(before, y)
    record["metrics_before"]["calibration"] = (baseline or {}).get("version") or "sigmoid"
    record["metrics_after"] = metrics_row(apply_record(record, z), y)
    record["warnings"] = warnings
    record["context"] = dict(context or {})
    return json_safe(record)


def validate_record(record: Any) -> dict[str, Any]:
    """Check a record's method and parameters (for records read from files)."""
    if not isinstance(record, dict) or record.get("method") not in METHODS:
        raise CalibrationError("Not a calibration record (needs 'method' temperature, platt or isotonic).")
    p = record.get("params") or {}
    try:
        if record["method"] == "temperature" and not float(p["temperature"]) > 0:
            raise CalibrationError("Temperature must be positive.")
        if record["method"] == "platt":
            float(p["a"]), float(p["b"])
        if record["method"] == "isotonic":
            x = np.asarray(p["x"], dtype=np.float64)
            y = np.asarray(p["y"], dtype=np.float64)
            if x.size == 0 or x.shape != y.shape or np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
                raise CalibrationError("Isotonic knots must be non-empty, equally long and non-decreasing.")
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationError(f"Calibration record has bad parameters ({exc}).") from None
    if not record.get("version"):
        raise CalibrationError("Calibration record has no version.")
    return record


def save_record(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a record on its own as JSON (for review, or to attach to another checkpoint)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(validate_record(record)), indent=2, sort_keys=True) + "\n")
    return path


def load_record(path: str | os.PathLike) -> dict[str, Any]:
    """Read a record written by :func:`save_record`."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"Cannot read calibration record {path}: {exc}") from None
    return validate_record(record)


def describe(record: dict[str, Any] | None) -> str:
    """One line for people: which map, fitted on what."""
    if not record:
        return "uncalibrated (plain sigmoid of the logit)"
    p = record.get("params") or {}
    if record.get("method") == "temperature":
        what = f"temperature T={float(p['temperature']):.4g}"
    elif record.get("method") == "platt":
        what = f"Platt sigmoid({float(p['a']):.4g}*logit{float(p['b']):+.4g})"
    else:
        what = f"isotonic ({len(p.get('x', []))} knots)"
    return f"{what}, {record.get('version')} on n={record.get('n')} ({record.get('n_real')} real / {record.get('n_fake')} fake)"

"""Metrics for a binary real (0) / fake (1) detector, and the curve data behind charts.

Why a module of its own: calibration, tiers, evaluation reports and the
dashboard must compute ECE, AUC, EER ... the same way, or their numbers will
disagree. Everything here is plain numpy in, plain floats / lists out; a
metric that is undefined on the data (AUC with one class) is ``nan``.

Conventions: the positive class is *fake* (label 1); a score ``s`` is called
fake when ``s >= threshold``; FPR is the share of real items called fake and
FNR the share of fakes called real.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from core.errors import InvalidArgumentError

#: Bins for ECE and reliability diagrams (Guo et al. 2017 use 15).
ECE_BINS = 15
#: Probabilities are clipped to [EPS, 1-EPS] before taking logs.
NLL_EPS = 1e-12
#: Target FPR for the ``tpr_at_fpr05`` column.
DEFAULT_TARGET_FPR = 0.05

ArrayLike = Sequence[float] | np.ndarray


def sigmoid(z: ArrayLike | float) -> np.ndarray:
    """Numerically stable logistic function (float64)."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _check(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise InvalidArgumentError(f"scores and labels differ in length ({s.size} vs {y.size})")
    if y.size and not np.isin(y, (0, 1)).all():
        raise InvalidArgumentError("labels must be 0 (real) or 1 (fake)")
    if not np.isfinite(s).all():
        raise InvalidArgumentError("scores contain NaN or infinity")
    return s, y.astype(np.int64)


def _both_classes(y: np.ndarray) -> bool:
    return bool(y.size) and 0 < int(y.sum()) < y.size


# -- proper scores ---------------------------------------------------------
def brier(probs: ArrayLike, labels: ArrayLike) -> float:
    """Mean squared error of the probability of *fake*."""
    p, y = _check(probs, labels)
    return float(np.mean((p - y) ** 2)) if y.size else math.nan


def nll(probs: ArrayLike, labels: ArrayLike, eps: float = NLL_EPS) -> float:
    """Mean negative log-likelihood (natural log), probabilities clipped to [eps, 1-eps]."""
    p, y = _check(probs, labels)
    if not y.size:
        return math.nan
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _bin_edges(p: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    """Bin edges: equal width over [0, 1], or quantiles of ``p`` (equal mass)."""
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    if strategy == "quantile":
        return np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1))
    raise InvalidArgumentError("strategy must be 'uniform' (equal width) or 'quantile' (equal mass)")


def _bin_index(p: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each probability; equal values always share a bin (ties are never split)."""
    return np.searchsorted(edges[1:-1], p, side="right")


def reliability_curve(probs: ArrayLike, labels: ArrayLike, n_bins: int = ECE_BINS,
                      strategy: str = "uniform") -> dict[str, Any]:
    """Reliability-diagram data: per non-empty bin, mean predicted vs observed share of fakes.

    ``ci_low``/``ci_high`` are 95% Wilson intervals on the observed share, because
    bins on a few hundred images are noisy and a chart should show it.
    """
    p, y = _check(probs, labels)
    out: dict[str, Any] = {k: [] for k in ("bin_lower", "bin_upper", "mean_predicted", "fraction_fake",
                                           "count", "ci_low", "ci_high")}
    out.update(strategy=strategy, n_bins=n_bins, n=int(y.size))
    if not y.size:
        out["ece"] = math.nan
        return out
    edges = _bin_edges(p, n_bins, strategy)
    idx = _bin_index(p, edges)
    gap = 0.0
    for b in range(n_bins):
        mask = idx == b
        n_b = int(mask.sum())
        if not n_b:
            continue
        conf, frac = float(p[mask].mean()), float(y[mask].mean())
        lo, hi = _wilson(frac, n_b)
        for key, value in zip(out, (float(edges[b]), float(edges[b + 1]), conf, frac, n_b, lo, hi)):
            out[key].append(value)
        gap += n_b * abs(conf - frac)
    out["ece"] = gap / y.size
    return out


def _wilson(frac: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    denom = 1 + z * z / n
    centre = (frac + z * z / (2 * n)) / denom
    half = z * math.sqrt(frac * (1 - frac) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def ece(probs: ArrayLike, labels: ArrayLike, n_bins: int = ECE_BINS, strategy: str = "uniform") -> float:
    """Expected calibration error: sum over bins of |mean p - share of fakes| weighted by bin size.

    ``strategy='uniform'`` uses equal-width bins, ``'quantile'`` equal-mass bins.
    """
    return float(reliability_curve(probs, labels, n_bins, strategy)["ece"])


# -- ranking ---------------------------------------------------------------
def auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve (nan with one class)."""
    s, y = _check(scores, labels)
    return float(roc_auc_score(y, s)) if _both_classes(y) else math.nan


def average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """Average precision with *fake* as the positive class (nan without fakes and reals)."""
    s, y = _check(scores, labels)
    return float(average_precision_score(y, s)) if _both_classes(y) else math.nan


def roc_points(scores: ArrayLike, labels: ArrayLike) -> dict[str, Any]:
    """ROC curve data (every distinct threshold): fpr, tpr, threshold, auc."""
    s, y = _check(scores, labels)
    if not _both_classes(y):
        return {"fpr": [], "tpr": [], "threshold": [], "auc": math.nan}
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    thr = np.where(np.isfinite(thr), thr, np.nan)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "threshold": thr.tolist(), "auc": auc(s, y)}


def eer(scores: ArrayLike, labels: ArrayLike) -> tuple[float, float]:
    """Equal error rate and the threshold nearest to it.

    The ROC is walked until FNR - FPR changes sign; the EER is where the
    straight segment between those two operating points crosses FPR = FNR.
    """
    s, y = _check(scores, labels)
    if not _both_classes(y):
        return math.nan, math.nan
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    fnr = 1.0 - tpr
    d = fnr - fpr  # +1 at the strictest threshold, -1 at the loosest
    i = int(np.argmax(d <= 0))
    if d[i] == 0 or i == 0:
        return float(fpr[i]), float(thr[i])
    t = d[i - 1] / (d[i - 1] - d[i])
    rate = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    nearest = thr[i] if t >= 0.5 else thr[i - 1]
    return float(rate), float(nearest)


def det_points(scores: ArrayLike, labels: ArrayLike) -> dict[str, Any]:
    """DET curve data: fpr and fnr at every distinct threshold, plus the EER."""
    roc = roc_points(scores, labels)
    rate, threshold = eer(scores, labels)
    return {"fpr": roc["fpr"], "fnr": [1.0 - t for t in roc["tpr"]], "threshold": roc["threshold"],
            "eer": rate, "eer_threshold": threshold}


def tpr_at_fpr(scores: ArrayLike, labels: ArrayLike, target_fpr: float = DEFAULT_TARGET_FPR) -> float:
    """Highest share of fakes caught by any threshold whose FPR is at most ``target_fpr``."""
    s, y = _check(scores, labels)
    if not _both_classes(y):
        return math.nan
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    ok = fpr <= target_fpr + 1e-12
    return float(tpr[ok].max())


# -- decisions at a threshold ---------------------------------------------
def accuracy_at(scores: ArrayLike, labels: ArrayLike, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, real accuracy (1 - FPR) and fake accuracy (1 - FNR) when ``s >= threshold`` means fake."""
    s, y = _check(scores, labels)
    pred = s >= threshold
    real, fake = y == 0, y == 1
    return {
        "accuracy": float(np.mean(pred == (y == 1))) if y.size else math.nan,
        "real_accuracy": float(np.mean(~pred[real])) if real.any() else math.nan,
        "fake_accuracy": float(np.mean(pred[fake])) if fake.any() else math.nan,
    }


#: Columns of :func:`metrics_row`, in report order.
ROW_COLUMNS = ("n", "n_real", "n_fake", "accuracy", "real_accuracy", "fake_accuracy", "ap", "auc", "eer",
               "ece", "ece_mass", "brier", "nll", "tpr_at_fpr05", "threshold")


def metrics_row(scores: ArrayLike, labels: ArrayLike, threshold: float = 0.5, *,
                from_logits: bool = False, n_bins: int = ECE_BINS) -> dict[str, float | int]:
    """Every per-group number of a report (one row of metrics.csv).

    ``scores`` are probabilities of *fake*, or logits with ``from_logits=True``
    (turned into probabilities with the sigmoid). ``threshold`` is on the
    probability. Ranking metrics (AP, AUC, EER, TPR@5%FPR) use the probability,
    i.e. what an analyst sees, so an isotonic map's ties count against it.
    """
    s, y = _check(scores, labels)
    p = sigmoid(s) if from_logits else s
    row: dict[str, float | int] = {"n": int(y.size), "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum())}
    row.update(accuracy_at(p, y, threshold))
    row["ap"] = average_precision(p, y)
    row["auc"] = auc(p, y)
    row["eer"] = eer(p, y)[0]
    row["ece"] = ece(p, y, n_bins, "uniform")
    row["ece_mass"] = ece(p, y, n_bins, "quantile")
    row["brier"] = brier(p, y)
    row["nll"] = nll(p, y)
    row["tpr_at_fpr05"] = tpr_at_fpr(p, y, DEFAULT_TARGET_FPR)
    row["threshold"] = float(threshold)
    return row


def json_safe(value: Any) -> Any:
    """Nested copy with numpy scalars as Python numbers and nan/inf as None (JSON, torch weights_only)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    return value

"""Review tiers: two thresholds on the calibrated probability.

Why: one threshold forces a verdict on every image, including those the
model cannot tell apart. Two thresholds split items into *clearly real*
(``p < real_below``), *needs review* and *clearly fake*
(``p >= fake_at_or_above``), so people look exactly at the uncertain band.

Error rates are those of the clear tiers: FPR = share of real images called
clearly fake, FNR = share of fakes called clearly real. Thresholds come from
targets on labelled data (:func:`tiers_from_targets`) or are set by hand
(:func:`manual_tiers`); :func:`project_tiers` gives what any pair of
thresholds would do on labelled data (the dashboard's sliders).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from core.errors import CalibrationError
from core.calibration.metrics import json_safe

TIERS = ("real", "review", "fake")
#: The seed's operating criteria: at most 5% of reals called fake, 20% of fakes called real.
DEFAULT_TARGET_FPR = 0.05
DEFAULT_TARGET_FNR = 0.20
#: Accuracy the clear tiers should reach (reported, not enforced).
TARGET_ACCURACY = 0.80


def _data(probs: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if p.size != y.size:
        raise CalibrationError(f"{p.size} probabilities but {y.size} labels.")
    if y.size and not np.isin(y, (0, 1)).all():
        raise CalibrationError("Labels must be 0 (real) or 1 (fake).")
    if not np.isfinite(p).all():
        raise CalibrationError("Some probabilities are NaN or infinite.")
    return p, y.astype(np.int64)


def project_tiers(probs: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray,
                  real_below: float, fake_at_or_above: float) -> dict[str, float | int]:
    """What the thresholds do on labelled data: error rates, review share, accuracy outside review.

    Rates with an empty denominator are ``nan``.
    """
    p, y = _data(probs, labels)
    called_real = p < real_below
    called_fake = (p >= fake_at_or_above) & ~called_real
    review = ~(called_real | called_fake)
    real, fake = y == 0, y == 1
    n, n_real, n_fake = int(y.size), int(real.sum()), int(fake.sum())
    outside = int(n - review.sum())
    correct = int((called_real & real).sum() + (called_fake & fake).sum())

    def rate(num: int, den: int) -> float:
        return num / den if den else math.nan

    return {
        "fpr": rate(int((called_fake & real).sum()), n_real),
        "fnr": rate(int((called_real & fake).sum()), n_fake),
        "review_share": rate(int(review.sum()), n),
        "review_share_real": rate(int((review & real).sum()), n_real),
        "review_share_fake": rate(int((review & fake).sum()), n_fake),
        "accuracy_outside_review": rate(correct, outside),
        "n": n, "n_real": n_real, "n_fake": n_fake,
        "called_real": int(called_real.sum()), "called_fake": int(called_fake.sum()), "in_review": int(review.sum()),
    }


def _between(lo: float, hi: float) -> float:
    """A threshold strictly above ``lo`` and at most ``hi`` (their midpoint when representable)."""
    mid = 0.5 * (lo + hi)
    return mid if lo < mid <= hi else hi


def tiers_from_targets(probs: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray,
                       target_fpr: float = DEFAULT_TARGET_FPR, target_fnr: float = DEFAULT_TARGET_FNR, *,
                       calibration_version: str | None = None) -> dict[str, Any]:
    """The narrowest review band whose clear tiers meet both targets on this data.

    ``fake_at_or_above`` is the lowest threshold calling at most ``target_fpr`` of
    the reals fake; ``real_below`` the highest calling at most ``target_fnr`` of the
    fakes real. Each sits halfway between the data points it separates, so the
    split of this data is exact and new data gets a margin. When the two cross,
    no review is needed and a single threshold (the most accurate one allowed by
    both targets) serves as both.
    """
    for name, t in (("target_fpr", target_fpr), ("target_fnr", target_fnr)):
        if not 0.0 <= t <= 1.0:
            raise CalibrationError(f"{name} must be between 0 and 1, got {t}.")
    p, y = _data(probs, labels)
    real, fake = np.sort(p[y == 0])[::-1], np.sort(p[y == 1])
    if real.size == 0 or fake.size == 0:
        raise CalibrationError(
            f"Tiers need labelled real and fake examples; got {real.size} real and {fake.size} fake."
        )
    values = np.unique(p)
    k = int(math.floor(target_fpr * real.size + 1e-9))  # reals allowed in the fake tier
    if k >= real.size:
        hi_min = float(values[0])
    else:
        r = real[k]  # must be excluded: threshold strictly above it
        above = values[values > r]
        hi_min = _between(float(r), float(above[0])) if above.size else float(np.nextafter(r, np.inf))
    m = int(math.floor(target_fnr * fake.size + 1e-9))  # fakes allowed in the real tier
    if m >= fake.size:
        lo_max = float(np.nextafter(values[-1], np.inf))
    else:
        f = fake[m]  # must not be called real: threshold at most f
        below = values[values < f]
        lo_max = _between(float(below[-1]), float(f)) if below.size else float(f)
    if lo_max <= hi_min:
        real_below, fake_at_or_above = lo_max, hi_min
    else:
        real_below = fake_at_or_above = _most_accurate(p, y, hi_min, lo_max, values)
    tiers = {
        "real_below": float(real_below),
        "fake_at_or_above": float(fake_at_or_above),
        "source": "fitted",
        "targets": {"fpr": float(target_fpr), "fnr": float(target_fnr)},
    }
    return _finish(tiers, p, y, calibration_version)


def _most_accurate(p: np.ndarray, y: np.ndarray, lo: float, hi: float, values: np.ndarray) -> float:
    """Single threshold in [lo, hi] with the best accuracy (``p >= t`` means fake)."""
    inner = values[(values > lo) & (values <= hi)]
    prev = np.concatenate([[lo], inner[:-1]])
    cands = np.unique(np.concatenate([[lo, hi], [_between(a, b) for a, b in zip(prev, inner)]]))
    pred = p[None, :] >= cands[:, None]
    acc = (pred == (y[None, :] == 1)).mean(axis=1)
    return float(cands[int(np.argmax(acc))])


def manual_tiers(real_below: float, fake_at_or_above: float, probs: Sequence[float] | np.ndarray | None = None,
                 labels: Sequence[int] | np.ndarray | None = None, *,
                 calibration_version: str | None = None) -> dict[str, Any]:
    """Tiers set by hand; with labelled data, the achieved rates and review share are projected."""
    if not (0.0 <= real_below <= fake_at_or_above <= 1.0):
        raise CalibrationError(
            f"Need 0 <= real_below <= fake_at_or_above <= 1; got {real_below} and {fake_at_or_above}."
        )
    tiers = {"real_below": float(real_below), "fake_at_or_above": float(fake_at_or_above), "source": "manual",
             "targets": {"fpr": None, "fnr": None}}
    if probs is None or labels is None:
        tiers.update(achieved=None, expected_review_share=None, calibration_version=calibration_version)
        return tiers
    p, y = _data(probs, labels)
    return _finish(tiers, p, y, calibration_version)


def _finish(tiers: dict[str, Any], p: np.ndarray, y: np.ndarray, calibration_version: str | None) -> dict[str, Any]:
    proj = project_tiers(p, y, tiers["real_below"], tiers["fake_at_or_above"])
    tiers["achieved"] = {
        "fpr": proj["fpr"], "fnr": proj["fnr"], "accuracy_outside_review": proj["accuracy_outside_review"],
        "review_share_real": proj["review_share_real"], "review_share_fake": proj["review_share_fake"],
        "n": proj["n"], "n_real": proj["n_real"], "n_fake": proj["n_fake"],
    }
    tiers["expected_review_share"] = proj["review_share"]
    tiers["calibration_version"] = calibration_version
    return json_safe(tiers)


def validate_tiers(tiers: Any) -> dict[str, Any]:
    """Check a tiers dict has ordered numeric thresholds."""
    try:
        lo, hi = float(tiers["real_below"]), float(tiers["fake_at_or_above"])
    except (KeyError, TypeError, ValueError):
        raise CalibrationError("Tiers need numeric 'real_below' and 'fake_at_or_above'.") from None
    if not lo <= hi:
        raise CalibrationError(f"Tiers are inverted: real_below {lo} > fake_at_or_above {hi}.")
    return tiers


def tier_of(p: float, tiers: dict[str, Any]) -> str:
    """'real', 'review' or 'fake' for one calibrated probability."""
    if p < float(tiers["real_below"]):
        return "real"
    if p >= float(tiers["fake_at_or_above"]):
        return "fake"
    return "review"


def tiers_of(probs: Sequence[float] | np.ndarray, tiers: dict[str, Any]) -> np.ndarray:
    """Vectorised :func:`tier_of` (array of strings)."""
    p = np.asarray(probs, dtype=np.float64)
    out = np.full(p.shape, "review", dtype=object)
    out[p >= float(tiers["fake_at_or_above"])] = "fake"
    out[p < float(tiers["real_below"])] = "real"
    return out


def describe(tiers: dict[str, Any] | None) -> str:
    """One line for people: thresholds, targets and what they achieved."""
    if not tiers:
        return "no review tiers"
    text = (f"real if p < {tiers['real_below']:.4f}, fake if p >= {tiers['fake_at_or_above']:.4f} "
            f"({tiers.get('source', '?')})")
    ach = tiers.get("achieved")
    if ach:
        text += (f"; on fitting data FPR {ach['fpr']:.3f}, FNR {ach['fnr']:.3f}, "
                 f"review share {tiers['expected_review_share']:.3f}")
        if ach.get("accuracy_outside_review") is not None:
            text += f", accuracy outside review {ach['accuracy_outside_review']:.3f}"
    return text

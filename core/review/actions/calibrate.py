"""Calibrate from reviewed items, a logit CSV or a labelled folder: the one door for the CLI and the
Calibration page, with the checks that protect production.

Why one door: the same CSV must get the same refusals (logits made with other
preprocessing), the same fit and the same thresholds whichever front end it
came in by. Why the checks: a calibration fitted on seven labels looks perfect
on those seven labels. So every figure offered for a decision is measured out
of sample (stratified cross-validation: each label is predicted by a map that
never saw it), activation is refused below a minimum number of labels per
class, and a fit that is worse out of sample than the calibration serving now
needs an explicit confirmation before it is activated.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.calibration import calibrators as C
from core.calibration import metrics as M
from core.calibration import tiers as T
from core.errors import CalibrationError, DetectorError

#: Labels per class below which a calibration may be saved but not activated.
DEFAULT_MIN_PER_CLASS = int(os.environ.get("LADEDA_MIN_LABELS_PER_CLASS", "30"))
#: Folds of the out-of-sample estimate (fewer when a class has fewer labels).
DEFAULT_FOLDS = 5
#: Out-of-fold NLL worse than the serving calibration's by more than this needs a confirmation.
WORSE_NLL_MARGIN = 1e-3


@dataclass
class CalibrationData:
    """(logit, label) pairs for one model's weights, and what was left out on the way."""

    logits: np.ndarray
    labels: np.ndarray
    source: str  #: "reviews", "csv" or "folder"
    description: str
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def n_real(self) -> int:
        return int((self.labels == 0).sum())

    @property
    def n_fake(self) -> int:
        return int((self.labels == 1).sum())


# ---------------------------------------------------------------------------
# data: three sources, one shape
# ---------------------------------------------------------------------------
def serving_space(checkpoint: Any) -> str:
    """Which logit the verdicts are decided on: ``"fused"`` (LaDeDa + CLIP, when the checkpoint has a
    fitted fusion and the encoder is installed) or ``"ladeda"``. A calibration fits that logit, and
    it is stored where serving reads it: the fused calibration lives in the checkpoint's learned
    parts, LaDeDa's own in its ``calibration`` (which stays LaDeDa's: rule 7 reads it)."""
    from core.encoders.clip import load_encoder
    from core.scoring.analysis import learned_parts

    return "fused" if learned_parts(checkpoint).fuses and load_encoder() is not None else "ladeda"


def serving_calibration(checkpoint: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The calibration record and tiers that serve now (see :func:`serving_space`)."""
    if serving_space(checkpoint) == "fused":
        from core.scoring.analysis import learned_parts

        parts = learned_parts(checkpoint)
        return parts.calibration, parts.tiers or checkpoint.tiers
    return checkpoint.calibration, checkpoint.tiers


def data_from_reviews(store: Any, checkpoint: Any, same_weights: Sequence[str] = ()) -> CalibrationData:
    """Real/fake-labelled items, with the logit this checkpoint serves them on.

    LaDeDa alone: the stored scorings' logits, for items whose latest scoring came from these
    weights (``same_weights`` lists further model SHA-256s known to share them). Fused: the fused
    logit recomputed from the features stored when each item was scored (no model pass), so that a
    scoring made while the encoder was absent cannot mix LaDeDa logits into a fused calibration.
    """
    if serving_space(checkpoint) == "fused":
        return _fused_from_reviews(store, checkpoint)
    allowed = {s for s in (checkpoint.sha256, *same_weights) if s}
    kept, skipped = [], {"unsure": 0, "unscored": 0, "other model": 0}
    for r in store.labelled_items(limit=None):
        if r["label"] not in ("real", "fake"):
            skipped["unsure"] += 1
        elif r.get("logit") is None:
            skipped["unscored"] += 1
        elif r.get("model_sha256") not in allowed:
            skipped["other model"] += 1
        else:
            kept.append(r)
    z = np.array([r["logit"] for r in kept], dtype=np.float64)
    y = np.array([1 if r["label"] == "fake" else 0 for r in kept], dtype=np.int64)
    return CalibrationData(z, y, "reviews", "reviewed items", skipped=skipped)


def _fused_from_reviews(store: Any, checkpoint: Any) -> CalibrationData:
    from core.encoders.clip import load_encoder
    from core.learning.adapt import current_heads, labelled_features, served_logits
    from core.scoring.analysis import learned_parts

    parts = learned_parts(checkpoint)
    ls = labelled_features(store, checkpoint, load_encoder().key)
    skipped = {"unsure": ls.skipped.get("unsure", 0),
               "without stored features": ls.skipped.get("no_features", 0) + ls.skipped.get("no_clip", 0)}
    if len(ls.features) == 0:
        return CalibrationData(np.zeros(0), np.zeros(0, dtype=np.int64), "reviews",
                               "reviewed items (fused LaDeDa + CLIP logits)", skipped=skipped)
    z, _, _ = served_logits(checkpoint, parts, current_heads(checkpoint, parts), ls.features)
    return CalibrationData(np.asarray(z, dtype=np.float64), np.asarray(ls.features.labels, dtype=np.int64),
                           "reviews", "reviewed items (fused LaDeDa + CLIP logits, from stored features)",
                           skipped=skipped)


def data_from_csv(source: str | os.PathLike | bytes, checkpoint: Any, *, name: str | None = None) -> CalibrationData:
    """A CSV with ``logit,label`` columns (the review export); refuses logits made with other preprocessing."""
    if isinstance(source, (bytes, bytearray)):
        text = bytes(source).decode("utf-8-sig", errors="replace")
        name = name or "the uploaded CSV"
    else:
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise CalibrationError(f"Cannot read {path}: {exc.strerror or exc}.") from None
        name = name or path.name
    rows = list(csv.DictReader(io.StringIO(text)))
    notes = _lineage_checks(rows, checkpoint, name)
    from core.training.datasets import logit_rows

    z, y = logit_rows(rows, name)
    return CalibrationData(np.asarray(z, dtype=np.float64), np.asarray(y, dtype=np.int64), "csv", name, notes=notes)


def data_from_folder(folder: str | os.PathLike, detector: Any, *, batch_size: int = 32,
                     progress: bool = True) -> CalibrationData:
    """A WildRF-layout folder scored here with the model's own preprocessing."""
    from core.evaluation.evaluate import score_images
    from core.training.datasets import list_images

    items = list_images(folder)
    logit_map, failures = score_images(detector, items, batch_size=batch_size, progress=progress, desc="scoring")
    keep = [i for i in range(len(items)) if (i, "clean") in logit_map]
    z = np.array([logit_map[(i, "clean")] for i in keep], dtype=np.float64)
    y = np.array([items[i].label for i in keep], dtype=np.int64)
    notes = [f"unreadable, skipped: {f} ({why})" for f, why in failures]
    return CalibrationData(z, y, "folder", str(folder), notes=notes, skipped={"unreadable": len(failures)})


def _lineage_checks(rows: list[dict[str, str]], checkpoint: Any, name: str) -> list[str]:
    """Refuse logits made with other preprocessing; note logits from a model outside this one's lineage."""
    fingerprints, models = set(), set()
    for row in rows:
        if str(row.get("label", "")).strip().lower() not in ("0", "1", "real", "fake"):
            continue
        if row.get("preprocess_fingerprint"):
            fingerprints.add(row["preprocess_fingerprint"].strip())
        if row.get("model_sha256"):
            models.add(row["model_sha256"].strip())
    own = checkpoint.spec.fingerprint()
    foreign = sorted(fingerprints - {own})
    if foreign:
        raise CalibrationError(
            f"{name} has logits made with preprocessing {', '.join(foreign)}, but this model uses {own}; "
            "those logits do not describe this model. Export only this model's reviews.")
    prov = checkpoint.provenance or {}
    known = {checkpoint.sha256, prov.get("calibrated_from_sha256"), prov.get("base_sha256"),
             *prov.get("lineage_sha256", [])}
    unknown = sorted(models - known)
    if unknown:
        return [f"{name} has logits from model file(s) {', '.join(u[:12] for u in unknown)} not in this "
                "checkpoint's lineage; make sure they share its weights."]
    return []


# ---------------------------------------------------------------------------
# the fit, measured out of sample
# ---------------------------------------------------------------------------
@dataclass
class CalibrationFit:
    """A fitted calibration with in-sample and out-of-sample evidence, and whether it may be activated."""

    record: dict[str, Any]
    data: CalibrationData
    method: str
    probs_in_sample: np.ndarray
    probs_out_of_fold: np.ndarray | None  #: each label predicted by a map fitted without it
    probs_active: np.ndarray  #: the serving calibration on the same logits
    folds: int
    oos: dict[str, Any] | None  #: out-of-sample metrics of the new fit (None when CV was impossible)
    active_metrics: dict[str, Any]
    tiers: dict[str, Any]  #: thresholds fitted from targets (or set by hand)
    min_per_class: int
    notes: list[str] = field(default_factory=list)
    checkpoint: Any = None  #: the checkpoint the fit is for (its learned parts receive a fused fit)

    @property
    def probs_for_decisions(self) -> np.ndarray:
        """Probabilities that the thresholds and projections are judged on: out of fold when possible."""
        return self.probs_out_of_fold if self.probs_out_of_fold is not None else self.probs_in_sample

    @property
    def activation_refusal(self) -> str | None:
        """Why this fit may be saved but not activated, or None."""
        n_real, n_fake = self.data.n_real, self.data.n_fake
        if min(n_real, n_fake) < self.min_per_class:
            return (f"Too few labels to put this calibration into production: {n_real} real and {n_fake} fake, "
                    f"and at least {self.min_per_class} of each are needed. You can save it as a version now "
                    "and activate a later fit once more items are reviewed.")
        if self.oos is None:
            return "Its accuracy on unseen labels could not be measured, so it cannot be put into production."
        return None

    @property
    def worse_than_active(self) -> str | None:
        """Why activating needs an explicit confirmation (worse out of sample than what serves now), or None."""
        if self.oos is None:
            return None
        new, old = self.oos.get("nll"), self.active_metrics.get("nll")
        if new is None or old is None or not new > old + WORSE_NLL_MARGIN:
            return None
        return (f"On labels it did not see, this fit is worse than the calibration serving now "
                f"(log loss {new:.3f} vs {old:.3f}; ECE {self.oos.get('ece', float('nan')):.3f} vs "
                f"{self.active_metrics.get('ece', float('nan')):.3f}). Activate it only if you are sure.")


def _metrics(p: np.ndarray, y: np.ndarray, tiers: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {"ece": M.ece(p, y), "brier": M.brier(p, y), "nll": M.nll(p, y), "auc": M.auc(p, y)}
    if tiers is not None:
        proj = T.project_tiers(p, y, float(tiers["real_below"]), float(tiers["fake_at_or_above"]))
        out.update({k: proj[k] for k in ("fpr", "fnr", "review_share", "accuracy_outside_review")})
    return M.json_safe(out)


def out_of_fold(logits: np.ndarray, labels: np.ndarray, method: str, *, folds: int = DEFAULT_FOLDS,
                seed: int = 0) -> tuple[np.ndarray | None, int, str | None]:
    """Stratified k-fold predictions: ``(probs, k, reason)``; probs is None (with the reason) when impossible."""
    from sklearn.model_selection import StratifiedKFold

    k = min(int(folds), int((labels == 0).sum()), int((labels == 1).sum()))
    if k < 2:
        return None, 0, "each class needs at least 2 labels to measure the fit on labels it did not see"
    oof = np.empty(labels.size, dtype=np.float64)
    for train, test in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(logits, labels):
        try:
            record = C.fit_calibration(logits[train], labels[train], method)
        except CalibrationError as exc:
            return None, k, f"a fold could not be fitted ({exc})"
        oof[test] = C.apply_record(record, logits[test])
    return oof, k, None


def fit(data: CalibrationData, method: str, checkpoint: Any, *, target_fpr: float = T.DEFAULT_TARGET_FPR,
        target_fnr: float = T.DEFAULT_TARGET_FNR, real_below: float | None = None,
        fake_at_or_above: float | None = None, min_per_class: int = DEFAULT_MIN_PER_CLASS,
        folds: int = DEFAULT_FOLDS, context: dict[str, Any] | None = None) -> CalibrationFit:
    """Fit ``method`` on ``data`` for ``checkpoint``; thresholds from targets unless both are set by hand."""
    if method not in C.METHODS:
        raise CalibrationError(f"Unknown calibration method {method!r}; choose one of {', '.join(C.METHODS)}.")
    if (real_below is None) != (fake_at_or_above is None):
        raise CalibrationError("Set both thresholds by hand (clearly real below, clearly fake at or above), "
                               "or neither.")
    z, y = data.logits, data.labels
    if z.size == 0:
        raise CalibrationError(f"No labelled logits in {data.description}: nothing to fit.")
    ctx = {"model_sha256": checkpoint.sha256, "model": checkpoint.label,
           "preprocess_fingerprint": checkpoint.spec.fingerprint(), "data": data.description,
           "data_kind": data.source, **(context or {})}
    ctx["logit"] = serving_space(checkpoint)
    serving, _ = serving_calibration(checkpoint)
    record = C.fit_calibration(z, y, method, baseline=serving, context=ctx)
    p_in = C.apply_record(record, z)
    p_active = C.apply_record(serving, z) if serving else M.sigmoid(z)
    p_oof, k, why = out_of_fold(z, y, method, folds=folds)
    notes = list(data.notes) + list(record.get("warnings") or [])
    if why:
        notes.append(f"Out-of-sample figures unavailable: {why}.")
    judged = p_oof if p_oof is not None else p_in
    if real_below is not None:
        tiers = T.manual_tiers(real_below, fake_at_or_above, judged, y, calibration_version=record["version"])
    else:
        tiers = T.tiers_from_targets(judged, y, target_fpr, target_fnr, calibration_version=record["version"])
    tiers["measured_on"] = "out_of_fold" if p_oof is not None else "in_sample"
    record["tiers"] = tiers
    oos = _metrics(p_oof, y, tiers) if p_oof is not None else None
    if oos is not None:
        record["metrics_out_of_fold"] = {**oos, "folds": k}
    acc = (oos or {}).get("accuracy_outside_review")
    if acc is not None and acc == acc and acc < T.TARGET_ACCURACY:
        notes.append(f"Accuracy outside the review band is {acc:.1%} on unseen labels, below the "
                     f"{T.TARGET_ACCURACY:.0%} criterion.")
    return CalibrationFit(record=record, data=data, method=method, probs_in_sample=p_in, probs_out_of_fold=p_oof,
                          probs_active=p_active, folds=k, oos=oos, active_metrics=_metrics(p_active, y, None),
                          tiers=tiers, min_per_class=int(min_per_class), notes=notes, checkpoint=checkpoint)


def retier(result: CalibrationFit, real_below: float | None = None, fake_at_or_above: float | None = None, *,
           target_fpr: float | None = None, target_fnr: float | None = None) -> dict[str, Any]:
    """New thresholds for a fit (by hand, or from new targets), judged on the same probabilities as the fit."""
    p, y, version = result.probs_for_decisions, result.data.labels, result.record["version"]
    if real_below is not None and fake_at_or_above is not None:
        tiers = T.manual_tiers(real_below, fake_at_or_above, p, y, calibration_version=version)
    else:
        tiers = T.tiers_from_targets(p, y, target_fpr if target_fpr is not None else T.DEFAULT_TARGET_FPR,
                                     target_fnr if target_fnr is not None else T.DEFAULT_TARGET_FNR,
                                     calibration_version=version)
    tiers["measured_on"] = result.tiers.get("measured_on")
    return tiers


# ---------------------------------------------------------------------------
# saving: a registry version (dashboard) or a checkpoint file (command line)
# ---------------------------------------------------------------------------
def save_version(result: CalibrationFit, registry: Any, *, tiers: dict[str, Any] | None = None,
                 created_by: str | None, note: str = "", activate: bool = False,
                 confirm_worse: bool = False) -> Any:
    """Save the fit as a registry version; activating is refused below the label minimum, and a fit worse
    out of sample than the serving one is activated only with ``confirm_worse``."""
    if activate:
        refusal = result.activation_refusal
        if refusal:
            raise CalibrationError(refusal)
        if result.worse_than_active and not confirm_worse:
            raise CalibrationError(result.worse_than_active + " Confirm to activate it anyway.")
    record = dict(result.record)
    chosen = tiers or result.tiers
    record["tiers"] = chosen
    learning = _fused_learning(result, chosen)
    if learning is not None:  # LaDeDa's own calibration and tiers stay as they are
        return registry.save_version(calibration=None, tiers=None, learning=learning, created_by=created_by,
                                     note=note, activate=activate)
    return registry.save_version(calibration=record, tiers=chosen, created_by=created_by, note=note,
                                 activate=activate)


def _fused_learning(result: CalibrationFit, tiers: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint's learned parts with this fit as the fused calibration, when it was fitted on fused logits."""
    if (result.record.get("context") or {}).get("logit") != "fused":
        return None
    import dataclasses

    from core.scoring.analysis import learned_parts

    # a copy: learned_parts is the process-wide parse of the serving checkpoint, never to be edited
    parts = dataclasses.replace(learned_parts(result.checkpoint), calibration={**result.record, "tiers": tiers},
                                tiers=tiers)
    return parts.to_record()


def write_checkpoint(result: CalibrationFit, checkpoint: Any, out: str | os.PathLike) -> tuple[str, str]:
    """Write a new checkpoint with this calibration and its tiers; returns ``(sha256, weights dtype)``."""
    import torch

    from core.model.checkpoint import now_iso

    dtype = "float16" if any(v.is_floating_point() and v.dtype == torch.float16
                             for v in checkpoint.state_dict.values()) else "float32"
    prov = checkpoint.provenance or {}
    lineage = [s for s in [*prov.get("lineage_sha256", []), checkpoint.sha256] if s]
    provenance = {**prov, "calibrated_from_sha256": checkpoint.sha256, "lineage_sha256": lineage,
                  "calibration_version": result.record["version"], "calibrated_at": now_iso()}
    learning = _fused_learning(result, result.tiers)
    if learning is not None:
        new = checkpoint.with_updates(learning=learning, provenance=provenance)
    else:
        new = checkpoint.with_updates(calibration=result.record, tiers=result.tiers, provenance=provenance)
    try:
        return new.save(out, dtype=dtype), dtype
    except OSError as exc:
        raise DetectorError(f"Could not write {out}: {exc.strerror or exc}.") from None


def activate_version(registry: Any, version_id: str | None, *, by: str | None,
                     min_per_class: int = DEFAULT_MIN_PER_CLASS) -> Any:
    """Serve a saved version (None: the base), refusing one fitted on fewer labels than the minimum."""
    if version_id is not None:
        version = registry.version(version_id)
        n_real, n_fake = (version.metrics or {}).get("n_real"), (version.metrics or {}).get("n_fake")
        if n_real is not None and n_fake is not None and min(int(n_real), int(n_fake)) < min_per_class:
            raise CalibrationError(
                f"Version {version_id} was fitted on {n_real} real and {n_fake} fake labels; at least "
                f"{min_per_class} of each are needed to put a calibration into production.")
    return registry.activate(version_id, by=by)

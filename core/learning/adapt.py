"""Adapt: refit the LaDeDa head, the CLIP head and the fusion on stored features and reviewer labels.

The one door for the CLI (``python -m core adapt``), the dashboard's Model page
and the loop benchmark. Backbones are untouched: only linear heads on features
stored at scoring time are refitted, so it takes seconds.

Recipe (:func:`fit_recipe`):
- each head is fitted on the base features (mean weight 1, every source of them
  weighing the same) plus the reviewer labels (weight ``LABEL_WEIGHT``), pulled
  toward the *current* head; without base data the pull is stronger, so a few
  labels nudge the model instead of replacing it;
- the fusion is refitted on out-of-fold head logits of the labels, pulled toward
  the current fusion weights (a prior worth ``PRIOR_PSEUDO_COUNT`` labels);
- ``unsure`` labels are never used.

Evaluation (:func:`adapt`): labels are split into contiguous blocks by labelling
time; each block is predicted by a fit that never saw it. Before = the active
model's served value on the same labels; after = those out-of-fold predictions.
The new calibration (Platt) and tiers are fitted on the out-of-fold fused logits.
When the active model was itself adapted, both are compared only on the labels it has not learned
from (if they hold both classes), so its figure is never in-sample. The verdict figures (clear
share, accuracy of clear verdicts, reals called clearly fake) use tiers refitted per time block on
the other blocks, for both models, plus the parts' agreement rule.
A fit worse out of fold than the active model (AUC) is refused unless forced.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.calibration.metrics import auc, average_precision, ece
from core.errors import DetectorError
from core.learning.features import FeatureSet, get_clip, get_ladeda, ladeda_key
from core.learning.fusion import DEFAULT_PRIOR, Fusion, fit_fusion
from core.learning.heads import LinearHead, balanced_weights, fit_logistic, standardisation
from core.learning.parts import LearnedParts, clip_input

DEFAULT_MIN_PER_CLASS = 20
#: A reviewer label counts this many times a base example.
#: A reviewer label counts as this many base rows: labels are the team's own traffic, the base data is
#: not. Chosen leave-one-source-out on the held-out sources' train+val images (CLIP head on the block
#: tokens, k = 20 / 50 labels of the held-out source, 3 repeats): mean AUC 0.780 / 0.777 at weight 5,
#: 0.788 / 0.794 at 20, 0.798 / 0.801 at 50, 0.807 / 0.805 at 200; 50 kept, past it gains are ≤ 0.01.
LABEL_WEIGHT = 50.0
#: Pull toward the current head (per unit of total sample weight), with and without base data.
L2_WITH_BASE = {"ladeda": 0.05, "clip": 0.1}
L2_WITHOUT_BASE = {"ladeda": 1.0, "clip": 1.0}
CV_FOLDS = 5
INNER_FOLDS = 3


class AdaptError(DetectorError):
    """Adapt cannot run or refuses to save (too few labels, worse out of fold)."""

    code = "adapt_error"


@dataclass
class Heads:
    ladeda: LinearHead
    clip: LinearHead | None
    fusion: Fusion | None

    def logits(self, f: FeatureSet) -> dict[str, np.ndarray]:
        zl = self.ladeda.logits(f.ladeda)
        out = {"ladeda": zl}
        if self.clip is not None and f.has_clip_for(self.clip.feature):
            zc = self.clip.logits(clip_input(self.clip.feature, f.clip_embedding, f.clip_cls, f.clip_layers))
            out["clip"] = zc
            out["fused"] = self.fusion.fuse(zl, zc) if self.fusion is not None else zl
        else:
            out["fused"] = zl
        return out


def current_heads(checkpoint: Any, parts: LearnedParts, standard: FeatureSet | None = None) -> Heads:
    """The active model's heads (LaDeDa ``fc`` expressed in the base standardisation when given)."""
    from core.learning.base import ladeda_head

    if parts.clip_head is not None and standard is None:
        mean, scale = _ladeda_standard(parts)
    elif standard is not None:
        mean, scale = standardisation(standard.ladeda)
    else:
        mean, scale = None, None
    if mean is None:
        n = checkpoint.state_dict["fc.weight"].numel()
        mean, scale = np.zeros(n), np.ones(n)
    return Heads(ladeda=ladeda_head(checkpoint, mean, scale), clip=parts.clip_head, fusion=parts.fusion)


def _ladeda_standard(parts: LearnedParts) -> tuple[np.ndarray | None, np.ndarray | None]:
    if parts.ood is not None:
        return parts.ood.ladeda_mean.astype(np.float64), parts.ood.ladeda_scale.astype(np.float64)
    return None, None


def fit_recipe(current: Heads, labels: FeatureSet, base: FeatureSet | None, *, inner_folds: int = INNER_FOLDS,
               seed: int = 0) -> Heads:
    """New heads and fusion from base features + reviewer labels (see module doc)."""
    l2 = L2_WITH_BASE if base is not None else L2_WITHOUT_BASE
    data = FeatureSet.concat([base, labels]) if base is not None and len(base) else labels
    n_base = len(data) - len(labels)
    base_w = balanced_weights(base.sources, n_base) if n_base else np.ones(0)  # sources weigh equally
    sw = np.concatenate([base_w, np.full(len(labels), LABEL_WEIGHT)])

    def heads_on(d: FeatureSet, w: np.ndarray) -> tuple[LinearHead, LinearHead | None]:
        lh = fit_logistic(d.ladeda, d.labels, l2=l2["ladeda"], sample_weight=w, prior=current.ladeda,
                          feature="ladeda")
        ch = None
        if current.clip is not None and d.has_clip_for(current.clip.feature):
            ch = fit_logistic(clip_input(current.clip.feature, d.clip_embedding, d.clip_cls, d.clip_layers),
                              d.labels, l2=l2["clip"], sample_weight=w, prior=current.clip,
                              feature=current.clip.feature)
        return lh, ch

    lh, ch = heads_on(data, sw)
    fusion = current.fusion
    if ch is not None:
        # out-of-fold head logits on the labels, so the fusion sees how each head does on unseen labels
        folds = _folds(len(labels), inner_folds, seed)
        zl, zc = np.zeros(len(labels)), np.zeros(len(labels))
        for k in range(inner_folds):
            test = folds == k
            if not test.any() or test.all():
                continue
            train_idx = np.concatenate([np.arange(n_base), n_base + np.flatnonzero(~test)])
            ilh, ich = heads_on(data.subset(train_idx), sw[train_idx])
            sub = labels.subset(np.flatnonzero(test))
            zl[test] = ilh.logits(sub.ladeda)
            zc[test] = ich.logits(clip_input(ich.feature, sub.clip_embedding, sub.clip_cls, sub.clip_layers))
        if len(set(labels.labels.tolist())) == 2:
            prior = current.fusion.to_record() if current.fusion is not None else dict(DEFAULT_PRIOR)
            fusion = fit_fusion(zl, zc, labels.labels, prior={k: prior[k] for k in ("w_ladeda", "w_clip", "bias")})
    return Heads(ladeda=lh, clip=ch, fusion=fusion)


def _folds(n: int, k: int, seed: int) -> np.ndarray:
    """Random fold ids with every fold used (for the inner split)."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(n) % max(1, k))


def time_folds(labelled_at: list[str], k: int = CV_FOLDS) -> np.ndarray:
    """Contiguous blocks by labelling time: fold ``i`` holds the i-th k-quantile of label times."""
    order = np.argsort(np.asarray(labelled_at, dtype=object), kind="stable")
    folds = np.empty(len(labelled_at), dtype=int)
    for i, block in enumerate(np.array_split(order, k)):
        folds[block] = i
    return folds


# -- reading the store --------------------------------------------------------
@dataclass
class LabelSet:
    features: FeatureSet
    rows: list[dict[str, Any]]
    skipped: dict[str, int] = field(default_factory=dict)


def labelled_features(store: Any, checkpoint: Any, clip_key: str | None) -> LabelSet:
    """Reviewer labels (real/fake; unsure excluded) with the features stored when they were scored.

    When the model's CLIP head reads the per-block CLS tokens, an item whose stored CLIP features
    predate them counts as lacking CLIP features (``no_clip``): re-scoring it stores them."""
    from core.scoring.analysis import learned_parts

    rows = store.labelled_items(limit=None)
    lkey = ladeda_key(checkpoint)
    need_layers = bool(clip_key) and learned_parts(checkpoint).clip_needs_layers
    keep, lad, emb, cls_, layers = [], [], [], [], []
    skipped = {"unsure": 0, "no_features": 0, "no_clip": 0}
    for r in rows:
        if r["label"] not in ("real", "fake"):
            skipped["unsure"] += 1
            continue
        pooled = get_ladeda(store.artifacts, r["sha256"], lkey)
        if pooled is None:
            skipped["no_features"] += 1
            continue
        c = get_clip(store.artifacts, r["sha256"], clip_key) if clip_key else None
        if clip_key and (c is None or (need_layers and c.layers is None)):
            skipped["no_clip"] += 1
            continue
        keep.append(r)
        lad.append(pooled)
        if c is not None:
            emb.append(c.embedding)
            cls_.append(c.cls)
            layers.append(c.layers)
    y = np.asarray([1 if r["label"] == "fake" else 0 for r in keep], dtype=int)
    fs = FeatureSet(sha256=[r["sha256"] for r in keep], labels=y,
                    ladeda=np.stack(lad) if lad else np.zeros((0, checkpoint.state_dict["fc.weight"].numel())),
                    clip_embedding=np.stack(emb) if emb else None, clip_cls=np.stack(cls_) if cls_ else None,
                    clip_layers=np.stack(layers) if layers and all(x is not None for x in layers) else None,
                    groups=["reviewed"] * len(keep), ladeda_key=lkey, clip_key=clip_key)
    return LabelSet(features=fs, rows=keep, skipped=skipped)


# -- the whole action ------------------------------------------------------------
@dataclass
class AdaptResult:
    checkpoint: Any  #: the adapted checkpoint (not yet written)
    heads: Heads
    parts: LearnedParts
    head_update: dict[str, torch.Tensor]
    ladeda_calibration: dict[str, Any]
    ladeda_tiers: dict[str, Any]
    report: dict[str, Any]

    def save(self, path: str | Path) -> str:
        dtype = "float16" if any(t.dtype == torch.float16 for t in self.checkpoint.state_dict.values()) else "float32"
        return self.checkpoint.save(path, dtype=dtype)

    def register(self, registry: Any, *, by: str | None = None, activate: bool = False, note: str = "") -> Any:
        """Save as a registry version (activate / roll back exactly like calibration versions)."""
        return registry.save_version(calibration=self.ladeda_calibration, tiers=self.ladeda_tiers, created_by=by,
                                     note=note or "adapt: heads and fusion refitted on reviewer labels",
                                     activate=activate, head=self.head_update, learning=self.parts.to_record(),
                                     adapt=self.report)


def policy_tiers(p: np.ndarray, tiers: dict[str, Any] | None, p_ladeda: np.ndarray | None = None,
                 p_clip: np.ndarray | None = None) -> np.ndarray:
    """The tier of each probability under ``tiers`` and the policy's agreement rule (rule 7) when both
    parts' probabilities are given; the OOD guard and the guardrails are not applied here."""
    from core.calibration.tiers import tiers_of
    from core.scoring.policy import DEFAULT_TIERS, parts_disagree

    out = np.asarray(tiers_of(p, tiers or DEFAULT_TIERS), dtype=object)
    if p_ladeda is not None and p_clip is not None:
        for i in range(len(out)):
            if parts_disagree(str(out[i]), float(p_ladeda[i]), float(p_clip[i])):
                out[i] = "review"
    return out


def verdict_figures(t: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    """Clear share, accuracy of the clear verdicts, and share of reals called clearly fake."""
    t, y = np.asarray(t, dtype=object), np.asarray(y)
    clear = t != "review"
    right = ((t == "fake") & (y == 1)) | ((t == "real") & (y == 0))
    reals = y == 0
    return {"clear_share": round(float(clear.mean()), 4) if len(t) else None,
            "clear_accuracy": round(float(right[clear].mean()), 4) if clear.any() else None,
            "reals_clearly_fake": round(float((t[reals] == "fake").mean()), 4) if reals.any() else None,
            "n_reals": int(reals.sum())}


def _metrics(z: np.ndarray, p: np.ndarray, y: np.ndarray, tiers: dict[str, Any] | None,
             served_tiers: np.ndarray | None = None) -> dict[str, Any]:
    t = policy_tiers(p, tiers) if served_tiers is None else served_tiers
    review = float(np.mean(t == "review")) if len(p) else float("nan")
    return {"auc": round(float(auc(z, y)), 4), "ap": round(float(average_precision(z, y)), 4),
            "ece": round(float(ece(p, y)), 4), "review_share": round(review, 4), "n": int(len(y)),
            **verdict_figures(t, y)}


def served_logits(checkpoint: Any, parts: LearnedParts, heads: Heads, f: FeatureSet) -> tuple[np.ndarray, np.ndarray,
                                                                                               dict[str, Any] | None]:
    """(served logit, served probability, tiers) of a model on stored features, as scoring would give."""
    from core.calibration.calibrators import apply_record
    from core.calibration.metrics import sigmoid

    z = heads.logits(f)
    if "clip" in z and parts.fuses:
        zf = z["fused"]
        p = apply_record(parts.calibration, zf) if parts.calibration else sigmoid(zf)
        return zf, np.asarray(p), parts.tiers or checkpoint.tiers
    zl = z["ladeda"]
    p = apply_record(checkpoint.calibration, zl) if checkpoint.calibration else sigmoid(zl)
    return zl, np.asarray(p), checkpoint.tiers


def adapt(store: Any, checkpoint: Any, *, base: FeatureSet | None = None, min_per_class: int = DEFAULT_MIN_PER_CLASS,
          force: bool = False, by: str | None = None, folds: int = CV_FOLDS, encoder_key: str | None = None,
          target_fpr: float | None = None, target_fnr: float | None = None) -> AdaptResult:
    """Fit, evaluate out of fold, and build the adapted checkpoint (see module doc). Raises :class:`AdaptError`.

    ``target_fpr``/``target_fnr`` are the served tiers' targets; by default the fused tiers use
    :data:`core.learning.base.FUSED_TIER_TARGETS` (rule 7 guards them) and LaDeDa alone 0.05 / 0.20."""
    from core.calibration.calibrators import apply_record, fit_calibration
    from core.calibration.tiers import tiers_from_targets
    from core.scoring.analysis import learned_parts

    parts = learned_parts(checkpoint)
    clip_key = encoder_key if parts.fuses else None
    ls = labelled_features(store, checkpoint, clip_key)
    labels = ls.features
    n_real, n_fake = int((labels.labels == 0).sum()), int((labels.labels == 1).sum())
    if min(n_real, n_fake) < min_per_class:
        extra = "" if not any(ls.skipped.values()) else (
            f" (not counted: {ls.skipped['unsure']} unsure, {ls.skipped['no_features'] + ls.skipped['no_clip']} "
            "without stored features)")
        raise AdaptError(f"Too few reviewer labels to adapt: {n_real} real and {n_fake} fake{extra}; "
                         f"at least {min_per_class} of each are needed.")
    if base is not None:
        if base.ladeda_key and base.ladeda_key != labels.ladeda_key:
            raise AdaptError("The base features were computed by another backbone than this model's; "
                             "pass --base-data for this model, or none.")
        if clip_key and base.clip_key != clip_key:
            base = None  # base rows without this encoder's features cannot train the CLIP head
    current = current_heads(checkpoint, parts, standard=base)
    # -- out-of-fold evaluation, folds by labelling time ----------------------
    fid = time_folds([r["labelled_at"] for r in ls.rows], folds)
    oof = {k: np.zeros(len(labels)) for k in ("ladeda", "clip", "fused")}
    for k in range(folds):
        test = fid == k
        train = ~test
        tr = labels.subset(np.flatnonzero(train))
        if len(set(tr.labels.tolist())) < 2:
            raise AdaptError("One block of labels (by time) holds a single class only; label more of both.")
        h = fit_recipe(current, tr, base)
        z = h.logits(labels.subset(np.flatnonzero(test)))
        for name in oof:
            if name in z:
                oof[name][test] = z[name]
    z_before, p_before, tiers_before = served_logits(checkpoint, parts, current, labels)
    y = labels.labels
    # labels the active version already learned from would flatter it (in-sample): when it was itself
    # adapted, both models are compared on the labels it has not seen, if they hold both classes
    seen_before = set((parts.provenance.get("adapt") or {}).get("label_event_ids") or [])
    fresh = np.asarray([int(r["label_event_id"]) not in seen_before for r in ls.rows], dtype=bool)
    cmp = fresh if (seen_before and len(set(y[fresh].tolist())) == 2) else np.ones(len(y), dtype=bool)
    zb = current.logits(labels)
    fused_before = "clip" in zb and parts.fuses
    pl_before = (np.asarray(apply_record(checkpoint.calibration, zb["ladeda"])) if checkpoint.calibration
                 else 1.0 / (1.0 + np.exp(-zb["ladeda"])))
    pc_before = 1.0 / (1.0 + np.exp(-zb["clip"])) if fused_before else None
    t_before = policy_tiers(p_before, tiers_before, pl_before if fused_before else None, pc_before)
    before = _metrics(z_before[cmp], p_before[cmp], y[cmp], tiers_before, t_before[cmp])
    # calibrate the out-of-fold fused (served) logits and fit tiers on them
    served_name = "fused" if parts.fuses else "ladeda"
    z_after = oof[served_name]
    cal = fit_calibration(z_after, y, "platt", context={"fitted_on": "out-of-fold reviewer labels", "n": int(len(y))})
    p_after = apply_record(cal, z_after)
    from core.calibration.tiers import DEFAULT_TARGET_FNR, DEFAULT_TARGET_FPR
    from core.learning.base import FUSED_TIER_TARGETS

    default = FUSED_TIER_TARGETS if parts.fuses else (DEFAULT_TARGET_FPR, DEFAULT_TARGET_FNR)
    fpr = default[0] if target_fpr is None else target_fpr
    fnr = default[1] if target_fnr is None else target_fnr
    tiers = tiers_from_targets(p_after, y, fpr, fnr, calibration_version=cal["version"])
    lcal = fit_calibration(oof["ladeda"], y, "platt", context={"fitted_on": "out-of-fold reviewer labels (LaDeDa)"})
    # the verdicts out of fold: each time block gets tiers fitted on the other blocks (same targets),
    # and, when fused, the agreement rule on the parts' out-of-fold probabilities
    t_after = np.empty(len(y), dtype=object)
    pl_after = np.asarray(apply_record(lcal, oof["ladeda"]))
    pc_after = 1.0 / (1.0 + np.exp(-oof["clip"]))
    for k in range(folds):
        test = fid == k
        if not test.any():
            continue
        other = ~test
        tk = (tiers_from_targets(p_after[other], y[other], fpr, fnr, calibration_version=cal["version"])
              if len(set(y[other].tolist())) == 2 else tiers)
        t_after[test] = policy_tiers(p_after[test], tk, pl_after[test] if parts.fuses else None,
                                     pc_after[test] if parts.fuses else None)
    after = _metrics(z_after[cmp], p_after[cmp], y[cmp], tiers, t_after[cmp])
    # the same verdict figures for the active model with its tiers refitted the same way (per time block,
    # on the other blocks, same targets): labels drawn from the review queue sit in the active model's
    # review band by construction, so its served tiers would call no real clearly fake there and no
    # candidate could ever match that; compared like for like, "does not raise" means something
    t_before_oof = np.empty(len(y), dtype=object)
    for k in range(folds):
        test = fid == k
        if not test.any():
            continue
        other = ~test
        tk = (tiers_from_targets(p_before[other], y[other], fpr, fnr) if len(set(y[other].tolist())) == 2
              else tiers_before)
        t_before_oof[test] = policy_tiers(p_before[test], tk, pl_before[test] if fused_before else None,
                                          pc_before[test] if fused_before else None)
    before["served_tiers"] = verdict_figures(t_before[cmp], y[cmp])
    before.update(verdict_figures(t_before_oof[cmp], y[cmp]))
    before["compared_on"] = after["compared_on"] = ("labels the active version had not learned from"
                                                    if not cmp.all() else "all labels")
    ltiers = tiers_from_targets(apply_record(lcal, oof["ladeda"]), y,
                                DEFAULT_TARGET_FPR if target_fpr is None else target_fpr,
                                DEFAULT_TARGET_FNR if target_fnr is None else target_fnr,
                                calibration_version=lcal["version"])
    lcal["tiers"] = ltiers
    parts_report = {name: {"auc": round(float(auc(oof[name], y)), 4), "ap": round(float(average_precision(oof[name], y)), 4)}
                    for name in (("ladeda", "clip", "fused") if parts.fuses else ("ladeda",))}
    if after["auc"] < before["auc"] and not force:
        raise AdaptError(f"Not saved: out of fold the adapted model is worse than the active one (AUC "
                         f"{after['auc']:.3f} against {before['auc']:.3f}). Label more, or force it.")
    # -- final fit on everything -------------------------------------------------
    final = fit_recipe(current, labels, base)
    w_raw, b_raw = final.ladeda.raw()
    head_update = {"fc.weight": torch.tensor(w_raw, dtype=torch.float32).view(1, -1),
                   "fc.bias": torch.tensor([b_raw], dtype=torch.float32)}
    # labelled traffic counts as seen by the OOD guard (each label event once: an adapt of an adapted
    # model adds only the labels its parent had not already added)
    new_rows = np.asarray([i for i, r in enumerate(ls.rows) if int(r["label_event_id"]) not in seen_before], dtype=int)
    added = labels.subset(new_rows)
    ood = parts.ood.with_seen(added.ladeda, added.clip_embedding) if parts.ood is not None else None
    times = [r["labelled_at"] for r in ls.rows]
    provenance = {
        "action": "adapt", "created_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "created_by": by, "n_labels": int(len(y)), "n_real": n_real, "n_fake": n_fake,
        "labelled_from": min(times), "labelled_until": max(times),
        "reviewers": sorted({r["reviewer"] for r in ls.rows if r.get("reviewer")}),
        "label_event_ids": [int(r["label_event_id"]) for r in ls.rows],
        "skipped": ls.skipped, "base_data": None if base is None else {"n": len(base), "data_hash": base.data_hash},
        "label_weight": LABEL_WEIGHT, "folds": folds, "ood_added": int(len(new_rows)),
        "fusion": final.fusion.to_record() if final.fusion is not None else None,
    }
    new_parts = LearnedParts(clip_head=final.clip if parts.fuses else parts.clip_head,
                             fusion=final.fusion if parts.fuses else parts.fusion,
                             calibration=cal if parts.fuses else parts.calibration,
                             tiers=tiers if parts.fuses else parts.tiers, ood=ood,
                             provenance={**parts.provenance, "adapt": provenance})
    report = {"n_labels": int(len(y)), "cv": {"before": before, "after": after, "parts_after": parts_report,
                                              "folds": folds, "grouped_by": "labelling time"},
              "served": served_name, "provenance": provenance, "tiers": tiers,
              "calibration_version": cal["version"], "forced": bool(force and after["auc"] < before["auc"])}
    from core.model.checkpoint import now_iso

    state = {**checkpoint.state_dict, **{k: v.to(checkpoint.state_dict[k].dtype) for k, v in head_update.items()}}
    import hashlib

    hh = hashlib.sha256()
    for k in sorted(head_update):
        hh.update(head_update[k].to(checkpoint.state_dict[k].dtype).float().numpy().tobytes())
    prov = {**checkpoint.provenance, "base_sha256": checkpoint.provenance.get("base_sha256") or checkpoint.sha256,
            "ladeda_head_sha256": hh.hexdigest(), "adapt": {k: v for k, v in provenance.items()
                                                            if k != "label_event_ids"},
            "adapted_at": now_iso()}
    adapted = checkpoint.with_updates(state_dict=state, calibration=lcal, tiers=ltiers, provenance=prov,
                                      learning=new_parts.to_record())
    return AdaptResult(checkpoint=adapted, heads=final, parts=new_parts, head_update=head_update,
                       ladeda_calibration=lcal, ladeda_tiers=ltiers, report=report)

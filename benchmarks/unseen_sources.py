"""The shipped recipe on sources it never saw: leave-one-source-out, with no reviewer labels.

    python benchmarks/unseen_sources.py --corpus ../shared/corpus [--cache .cache/features]
                                        [--eval test|trainval] [--shipped] [--json]

For each corpus source S that has training images, the learned parts (CLIP head,
fusion, calibration, tiers, OOD guard) are fitted by the shipped recipe
(:func:`core.learning.base.fit_base_parts`) on train and val *without* S, and the
held-out images of S are scored from their stored features as the product
serves them: fused probability, tiers, and the OOD guard that turns a clear
verdict into review. ``thumbnails-gemini`` (test only) is held out by every fit
of the shipped model, so it is scored by the parts fitted on all sources.

``--eval trainval`` scores S's train and val images (the set to tune on);
``--eval test`` scores S's test images (the set to report). Never tune on the
set you report. ``--shipped`` scores the test split with the parts shipped in
``--model`` instead of leave-one-source-out fits (the shipped defaults as an
analyst gets them; those sources are not unseen by any part).

The caveat, printed with the figures: the bundled LaDeDa *backbone* saw every
corpus source during training, so its column flatters LaDeDa; CLIP's
backbone is frozen and its head never saw S, so CLIP's column is fair.

Features come from the per-image cache that ``python -m core.learning.bundle``
uses (computed once by the product's own extraction; the first run is slow).
Prints per source and pooled: AUC of LaDeDa, CLIP and fused; the share of reals
called clearly fake; the share of clear verdicts; the share of clear verdicts
that are right (the acceptance criteria: ≤ 5 %, ≥ 20 %, ≥ 80 %).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STRESS = "thumbnails-gemini"


def _sources(fs) -> list[str]:
    """The manifest's source per row of a feature set (read by ``extract_folder``; file-name groups
    when the corpus has no manifest)."""
    return list(fs.sources) if fs.sources else list(fs.groups)


def served(ckpt, parts, f):
    """(z per part, served tier per image, OOD tripped per image): each image through the policy
    (:func:`core.scoring.policy.decide`) with its served probability, tiers, OOD finding and components."""
    from core.calibration.calibrators import apply_record
    from core.calibration.metrics import sigmoid
    from core.learning.adapt import current_heads, served_logits
    from core.scoring.policy import decide

    heads = current_heads(ckpt, parts)
    z = heads.logits(f)
    _, p, tiers = served_logits(ckpt, parts, heads, f)
    fused = "clip" in z and parts.fuses
    p_lad = apply_record(ckpt.calibration, z["ladeda"]) if ckpt.calibration else sigmoid(z["ladeda"])
    tripped = np.zeros(len(f), dtype=bool)
    dist = np.zeros(len(f))
    thr = np.inf
    if parts.ood is not None:
        dist, space = parts.ood.distances(f.ladeda, f.clip_embedding if fused else None)
        thr = parts.ood.thresholds[space]
        tripped = dist > thr
    tier = []
    for i in range(len(f)):
        comps = {"used": "fused" if fused else "ladeda", "ladeda": {"probability": float(p_lad[i])},
                 "clip": {"probability": float(sigmoid(z["clip"][i]))} if fused else None}
        ood = {"distance": float(dist[i]), "threshold": float(thr), "tripped": bool(tripped[i])}
        tier.append(decide(float(p[i]), tiers, None, ood=ood, components=comps).tier)
    return z, np.asarray(tier, dtype=object), tripped


def summary(z, tier, tripped, y) -> dict:
    from core.calibration.metrics import auc

    reals = y == 0
    clear = tier != "review"
    right = ((tier == "fake") & (y == 1)) | ((tier == "real") & (y == 0))
    two = len(set(y.tolist())) == 2
    return {"n": int(len(y)), "n_real": int(reals.sum()), "n_fake": int((~reals).sum()),
            **{f"auc_{k}": (round(float(auc(v, y)), 4) if two else None) for k, v in z.items()},
            "reals_clear_fake": int(((tier == "fake") & reals).sum()), "clear": int(clear.sum()),
            "clear_right": int((right & clear).sum()), "ood_tripped": int(tripped.sum())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="folder with train/, val/, test/<source>/ (and manifest.csv)")
    ap.add_argument("--model", default="data/models/ladeda9.pt")
    ap.add_argument("--cache", default=".cache/features", help="per-image feature cache (git-ignored)")
    ap.add_argument("--eval", choices=("test", "trainval"), default="test",
                    help="which held-out images are scored: test (report) or train+val (tune)")
    ap.add_argument("--shipped", action="store_true",
                    help="score the test split with the model's shipped parts (no leave-one-source-out fits)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from core.encoders.clip import encoder_status, load_encoder
    from core.learning.base import fit_base_parts
    from core.learning.features import FeatureSet, extract_folder
    from core.model.checkpoint import load_checkpoint
    from core.review.artifacts import ArtifactStore
    from core.scoring.detector import Detector

    corpus = Path(args.corpus)
    ckpt = load_checkpoint(args.model)
    encoder = load_encoder()
    if encoder is None:
        print(f"error: {encoder_status()}", file=sys.stderr)
        return 2
    det, cache = Detector(ckpt), ArtifactStore(args.cache)
    sets, srcs = {}, {}
    for split in ("train", "val", "test"):
        fs = extract_folder(corpus / split, det, encoder, cache, progress=not args.json)
        sets[split] = fs
        srcs[split] = np.asarray(_sources(fs))
    held = [s for s in sorted(set(srcs["train"].tolist()))]
    rows = []
    pooled: dict[str, list] = {"z": [], "tier": [], "tripped": [], "y": []}

    def score(name: str, parts, f: FeatureSet) -> None:
        z, tier, tripped = served(ckpt, parts, f)
        rows.append({"source": name, **summary(z, tier, tripped, f.labels)})
        if name != STRESS:
            pooled["z"].append(z)
            pooled["tier"].append(tier)
            pooled["tripped"].append(tripped)
            pooled["y"].append(f.labels)

    for s in held:
        if args.shipped:
            from core.scoring.analysis import learned_parts

            score(s, learned_parts(ckpt), sets["test"].subset(np.flatnonzero(srcs["test"] == s)))
            continue
        tr = sets["train"].subset(np.flatnonzero(srcs["train"] != s))
        va = sets["val"].subset(np.flatnonzero(srcs["val"] != s))
        parts = fit_base_parts(ckpt, tr, va)
        if args.eval == "test":
            f = sets["test"].subset(np.flatnonzero(srcs["test"] == s))
        else:
            f = FeatureSet.concat([sets["train"].subset(np.flatnonzero(srcs["train"] == s)),
                                   sets["val"].subset(np.flatnonzero(srcs["val"] == s))])
        score(s, parts, f)
    stress = np.flatnonzero(srcs["test"] == STRESS)
    if args.eval == "test" and len(stress):
        from core.scoring.analysis import learned_parts

        stress_parts = learned_parts(ckpt) if args.shipped else fit_base_parts(ckpt, sets["train"], sets["val"])
        score(STRESS, stress_parts, sets["test"].subset(stress))
    zs = {k: np.concatenate([z[k] for z in pooled["z"]]) for k in pooled["z"][0]}
    total = summary(zs, np.concatenate(pooled["tier"]), np.concatenate(pooled["tripped"]),
                    np.concatenate(pooled["y"]))
    total["source"] = "pooled (held-out corpus sources)"

    def shares(r: dict) -> dict:
        return {"reals_clear_fake_share": round(r["reals_clear_fake"] / max(r["n_real"], 1), 4),
                "clear_share": round(r["clear"] / max(r["n"], 1), 4),
                "clear_right_share": (round(r["clear_right"] / r["clear"], 4) if r["clear"] else None)}

    if args.shipped:
        total["source"] = "pooled (corpus test sources, shipped parts)"
    out = {"eval": "test, shipped parts" if args.shipped else args.eval, "results": [{**r, **shares(r)} for r in rows], "pooled": {**total, **shares(total)},
           "caveat": ("the LaDeDa column is fair only when --model's backbone never saw the corpus sources "
                      "(the bundled LaDeDa9 saw them all; the official WildRF Tiny saw none)")}
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"held-out images: {out['eval']}; {out['caveat']}")
    for r in out["results"] + [out["pooled"]]:
        aucs = " ".join(f"{k[4:]} {r[k]:.3f}" if r[k] is not None else f"{k[4:]} —" for k in r if k.startswith("auc_"))
        right = "—" if r["clear_right_share"] is None else f"{r['clear_right_share']:.0%}"
        print(f"{r['source']:<34} n={r['n']:>3}  AUC {aucs}  reals clear-fake {r['reals_clear_fake_share']:.0%}  "
              f"clear {r['clear_share']:.0%}  clear right {right}  OOD {r['ood_tripped']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

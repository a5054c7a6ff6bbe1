"""The shipped recipe on sources it never saw: leave-one-source-out over every base source, with no reviewer labels.

    python benchmarks/unseen_sources.py --corpus ../shared/corpus [--unseen ../shared/unseen]
                                        [--cache .cache/features] [--eval test|trainval|both]
                                        [--shipped] [--json]

The base sources are the corpus's train/val sources and, with ``--unseen`` (a folder laid out
``<source>/{train,val,test}/{0_real,1_fake}`` with a ``manifest.csv``), its sources too. For each
base source S the learned parts (CLIP head, fusion, calibration, tiers, OOD guard) are fitted by the
shipped recipe (:func:`core.learning.base.fit_base_parts`, which itself works leave-one-source-out
inside) on the train and val images of every *other* source, and S's images are scored from their
stored features as the product serves them: fused probability, tiers, rule 7 and the OOD guard that
turns a clear verdict into review. ``thumbnails-gemini`` (a corpus test-only stress group of 64×64
images from its own origin repository) is in no fit: it is scored by the parts fitted on every base
source and reported apart, outside the pooled figures.

``--eval trainval`` scores S's train and val images (the set to tune on); ``--eval test`` scores S's
test images (the set to report); ``both`` does both from the same fits. Never tune on the set you
report. ``--shipped`` scores the test splits with the parts shipped in ``--model`` instead (sources
they saw: the shipped defaults as an analyst gets them).

Per held-out source and pooled: AUC of LaDeDa, CLIP and fused. Pooled AUC mixes "which source is
this" with "is it fake"; the mean *within-source* AUC (over the held-out sources that have both
classes) is the honest figure, and both are printed. Then the share of reals called clearly fake,
the share of clear verdicts and the share of those that are right (the acceptance criteria: ≤ 5 %,
≥ 20 %, ≥ 80 %) and how many images the OOD guard withheld.

The caveat, printed with the figures: the bundled LaDeDa *backbone* saw every corpus source in
training, so its column flatters LaDeDa there; on ``--unseen`` sources it is fair, as is CLIP's
everywhere (a frozen backbone; its head never saw S).

Features come from the per-image cache that ``python -m core.learning.bundle`` uses (computed once
by the product's own extraction; the first run is slow).
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


def _heads_without(base, bsrc: np.ndarray, held: list[str], progress: bool) -> dict:
    """The CLIP head fitted without each source and without each pair of sources (the recipe's own fit,
    :func:`core.learning.base.fit_clip_head`). Nested leave-one-source-out needs, for held-out S, the
    head without S and, for every other source T, the head without S and T; that fit is the same for
    (S, T) and (T, S), so each is computed once."""
    from itertools import combinations

    from core.learning.base import fit_clip_head
    from core.learning.heads import HeadError

    heads: dict = {}
    for excl in [(s,) for s in held] + list(combinations(held, 2)):
        keep = np.flatnonzero(~np.isin(bsrc, excl))
        try:
            heads[excl] = fit_clip_head(base.subset(keep), list(bsrc[keep]))
        except HeadError:  # what is left has one class only
            heads[excl] = None
        if progress:
            print(f"CLIP head without {' + '.join(excl)}", file=sys.stderr, flush=True)
    return heads


def _out_of_source(base, bsrc: np.ndarray, rows: np.ndarray, heads: dict, held: str | None) -> np.ndarray:
    """For the base rows ``rows`` (all but ``held``'s), each row's logit from the head fitted without its
    source (and without ``held``): what :func:`core.learning.base.out_of_source_logits` computes on them."""
    from core.learning.parts import clip_input

    z = np.full(len(rows), np.nan)
    for t in sorted(set(bsrc[rows].tolist())):
        head = heads[(t,) if held is None else tuple(sorted((held, t)))]
        m = bsrc[rows] == t
        if head is not None:
            sub = base.subset(rows[m])
            z[m] = head.logits(clip_input(head.feature, sub.clip_embedding, sub.clip_cls, sub.clip_layers))
    return z


def within_mean(rows: list[dict], key: str = "auc_fused") -> float | None:
    """Mean of a per-source AUC over the sources that have both classes."""
    vals = [r[key] for r in rows if r.get(key) is not None]
    return round(float(np.mean(vals)), 4) if vals else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="folder with train/, val/, test/<source>/ (and manifest.csv)")
    ap.add_argument("--unseen", action="append", default=[],
                    help="more base sources: folder with <source>/{train,val,test}/ and manifest.csv (repeatable)")
    ap.add_argument("--model", default="data/models/ladeda9.pt")
    ap.add_argument("--cache", default=".cache/features", help="per-image feature cache (git-ignored)")
    ap.add_argument("--eval", choices=("test", "trainval", "both"), default="test",
                    help="which held-out images are scored: test (report), train+val (tune) or both")
    ap.add_argument("--shipped", action="store_true",
                    help="score the test split with the model's shipped parts (no leave-one-source-out fits)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from core.encoders.clip import encoder_status, load_encoder
    from core.learning.base import BUNDLED_BACKBONE_SOURCES, fit_base_parts
    from core.learning.bundle import base_rows
    from core.learning.features import FeatureSet
    from core.model.checkpoint import load_checkpoint
    from core.review.artifacts import ArtifactStore
    from core.scoring.analysis import learned_parts
    from core.scoring.detector import Detector

    ckpt = load_checkpoint(args.model)
    encoder = load_encoder()
    if encoder is None:
        print(f"error: {encoder_status()}", file=sys.stderr)
        return 2
    det, cache = Detector(ckpt), ArtifactStore(args.cache)
    progress = not args.json
    base = base_rows(args.corpus, args.unseen, det, encoder, cache, progress=progress)
    test = base_rows(args.corpus, args.unseen, det, encoder, cache, progress=progress, splits=("test",))
    bsrc, tsrc = np.asarray(_sources(base)), np.asarray(_sources(test))
    held = sorted(set(bsrc.tolist()))
    evals = ["test"] if args.shipped else (["test", "trainval"] if args.eval == "both" else [args.eval])
    rows: dict[str, list] = {e: [] for e in evals}
    pooled: dict[str, dict[str, list]] = {e: {"z": [], "tier": [], "tripped": [], "y": []} for e in evals}

    def score(e: str, name: str, parts, f: FeatureSet) -> None:
        if not len(f):
            return
        z, tier, tripped = served(ckpt, parts, f)
        rows[e].append({"source": name, "backbone_saw_it": name in BUNDLED_BACKBONE_SOURCES,
                        **summary(z, tier, tripped, f.labels)})
        if name != STRESS:
            for k, v in (("z", z), ("tier", tier), ("tripped", tripped), ("y", f.labels)):
                pooled[e][k].append(v)

    heads = {} if args.shipped else _heads_without(base, bsrc, held, progress)
    for s in held:
        if args.shipped:
            score("test", s, learned_parts(ckpt), test.subset(np.flatnonzero(tsrc == s)))
            continue
        rest = np.flatnonzero(bsrc != s)
        parts = fit_base_parts(ckpt, base.subset(rest), clip_head=heads[(s,)],
                               clip_oos=_out_of_source(base, bsrc, rest, heads, s))
        if progress:
            print(f"fitted without {s}", file=sys.stderr, flush=True)
        for e in evals:
            score(e, s, parts, (test.subset(np.flatnonzero(tsrc == s)) if e == "test"
                                else base.subset(np.flatnonzero(bsrc == s))))
    stress = np.flatnonzero(tsrc == STRESS)
    if "test" in evals and len(stress):
        stress_parts = learned_parts(ckpt) if args.shipped else fit_base_parts(
            ckpt, base, clip_oos=_out_of_source(base, bsrc, np.arange(len(base)), heads, None))
        score("test", STRESS, stress_parts, test.subset(stress))

    def shares(r: dict) -> dict:
        return {"reals_clear_fake_share": round(r["reals_clear_fake"] / max(r["n_real"], 1), 4),
                "clear_share": round(r["clear"] / max(r["n"], 1), 4),
                "clear_right_share": (round(r["clear_right"] / r["clear"], 4) if r["clear"] else None)}

    out: dict = {"model": args.model, "base_sources": held,
                 "caveat": ("the LaDeDa column is fair only on sources --model's backbone never saw (the bundled "
                            "LaDeDa9 saw the four corpus sources, none of --unseen)")}
    for e in evals:
        p = pooled[e]
        zs = {k: np.concatenate([z[k] for z in p["z"]]) for k in p["z"][0]}
        total = summary(zs, np.concatenate(p["tier"]), np.concatenate(p["tripped"]), np.concatenate(p["y"]))
        total["source"] = ("pooled (test splits, shipped parts)" if args.shipped
                           else f"pooled (held-out sources, {e})")
        held_rows = [r for r in rows[e] if r["source"] != STRESS]
        total["within_source_auc"] = {k: within_mean(held_rows, k) for k in total if k.startswith("auc_")}
        total["within_source_n"] = sum(r.get("auc_fused") is not None for r in held_rows)
        out[e] = {"results": [{**r, **shares(r)} for r in rows[e]], "pooled": {**total, **shares(total)}}
    if args.json:
        print(json.dumps(out))
        return 0
    print(out["caveat"])
    for e in evals:
        print(f"== held-out images: {e}{', shipped parts' if args.shipped else ''}")
        for r in out[e]["results"] + [out[e]["pooled"]]:
            aucs = " ".join(f"{k[4:]} {r[k]:.3f}" if r[k] is not None else f"{k[4:]} —"
                            for k in r if k.startswith("auc_"))
            right = "—" if r["clear_right_share"] is None else f"{r['clear_right_share']:.0%}"
            print(f"{r['source']:<34} n={r['n']:>3}  AUC {aucs}  reals clear-fake {r['reals_clear_fake_share']:.0%}  "
                  f"clear {r['clear_share']:.0%}  clear right {right}  OOD {r['ood_tripped']}")
        w = out[e]["pooled"]["within_source_auc"]
        print("mean within-source AUC (" + str(out[e]["pooled"]["within_source_n"]) + " two-class sources): "
              + " ".join(f"{k[4:]} {v:.3f}" for k, v in w.items() if v is not None))
    return 0


if __name__ == "__main__":
    sys.exit(main())

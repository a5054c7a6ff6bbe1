"""The review → labels → adapt loop, measured: AUC/AP per number of reviewer labels k.

    python benchmarks/adaptation.py --data DIR [--labels 0,20,50,100] [--repeats N] [--json]
                                    [--model M.pt] [--base-data B.npz] [--store KEEP_DIR]

DIR is laid out like ``../shared/corpus/test`` (``<source>/{0_real,1_fake}/``), images
the models never trained on. Everything is scored once into a store through the
product's own code (``analyse`` + ``record_analysis``: the slow part). Then, per
repeat and k: in a copy of that store, k random items are labelled through the
store as reviewers would, ``adapt`` runs (bundled base features), and the rest
are scored from their stored features. Prints mean and standard deviation over
repeats for LaDeDa only, CLIP only and fused.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/adaptation.py")
    ap.add_argument("--data", required=True)
    ap.add_argument("--labels", default="0,20,50,100")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--base-data", default=None,
                    help="base features (.npz) or labelled folder for adapt (default: the bundled model's, when they "
                         "match its backbone)")
    ap.add_argument("--store", default=None,
                    help="folder for the scored base store, kept and reused by later runs on the same --data "
                         "(default: a temporary folder, removed at the end)")
    args = ap.parse_args(argv)

    from core.calibration.metrics import auc, average_precision
    from core.encoders.clip import load_encoder
    from core.learning.adapt import AdaptError, adapt, current_heads, labelled_features
    from core.learning.basedata import resolve_base
    from core.learning.features import get_ladeda, has_clip_layers, labelled_files, ladeda_key
    from core.model.checkpoint import load_checkpoint
    from core.review.store import ReviewStore
    from core.scoring.analysis import analyse, learned_parts, record_analysis
    from core.scoring.detector import Detector

    ckpt = load_checkpoint(args.model or "data/models/ladeda9.pt")
    det = Detector(ckpt)
    encoder = load_encoder()
    work = Path(tempfile.mkdtemp(prefix="adapt-bench-"))
    base_dir = Path(args.store) if args.store else work / "base"
    store = ReviewStore(base_dir / "r.sqlite")
    truth: dict[str, int] = {}
    files = labelled_files(args.data)
    lkey, ckey = ladeda_key(ckpt), encoder.key if encoder is not None else None

    def has_features(st, sha: str) -> bool:
        """The loop reads only stored features, keyed by backbone and encoder: a kept store scored
        by another version of the same backbone (a new head, fusion or tiers) serves as it is."""
        if get_ladeda(st.artifacts, sha, lkey) is None:
            return False
        return ckey is None or has_clip_layers(st.artifacts, sha, ckey)

    for i, (f, label, _) in enumerate(files):
        sha = hashlib.sha256(f.read_bytes()).hexdigest()
        if args.store and has_features(store, sha):  # scored by an earlier run into the kept store
            truth[sha] = label
            continue
        a = analyse(det, f, name=f.name, guardrails=False)
        record_analysis(store, a, name=f.name, uploader="benchmark", auto_queue=False)
        truth[a.score.sha256] = label
        if not args.json and (i + 1) % 20 == 0:
            print(f"scored {i + 1}/{len(files)}", file=sys.stderr, flush=True)
    store.close()
    shas = sorted(truth)
    base = resolve_base(ckpt, args.base_data, encoder=encoder, cache=None)
    key = encoder.key if encoder is not None else None
    rng = np.random.default_rng(args.seed)
    ks = [int(k) for k in args.labels.split(",")]
    scores: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for rep in range(args.repeats):
        for k in ks:
            copy = work / f"r{rep}-k{k}"
            shutil.copytree(base_dir, copy)
            s = ReviewStore(copy / "r.sqlite")
            pick = set(rng.choice(len(shas), size=min(k, len(shas) - 2), replace=False).tolist()) if k else set()
            for i in sorted(pick):
                s.label(shas[i], "fake" if truth[shas[i]] else "real", reviewer=f"bench{rep}")
            model, parts = ckpt, learned_parts(ckpt)
            if k:
                try:
                    res = adapt(s, ckpt, base=base, min_per_class=1, force=True, encoder_key=key, folds=3)
                    model, parts = res.checkpoint, res.parts
                except AdaptError as exc:
                    print(f"repeat {rep} k={k}: {exc}", file=sys.stderr)
            # the rest, from their stored features (labelled as 'rest' to read them back)
            rest = [sh for i, sh in enumerate(shas) if i not in pick]
            for sh in rest:
                s.label(sh, "fake" if truth[sh] else "real", reviewer="truth")
            ls = labelled_features(s, model, key if parts.fuses else None)
            keep = [j for j, sh in enumerate(ls.features.sha256) if sh in set(rest)]
            f = ls.features.subset(keep)
            z = current_heads(model, parts).logits(f)
            for name in ("ladeda", "clip", "fused"):
                if name in z:
                    scores.setdefault((k, name), []).append((auc(z[name], f.labels),
                                                             average_precision(z[name], f.labels)))
            s.close()
            shutil.rmtree(copy)
    results = [{"k": k, "model": name, "auc_mean": round(float(np.mean([a for a, _ in v])), 4),
                "auc_std": round(float(np.std([a for a, _ in v])), 4),
                "ap_mean": round(float(np.mean([p for _, p in v])), 4)} for (k, name), v in sorted(scores.items())]
    shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps({"results": results, "n_images": len(shas), "repeats": args.repeats}))
    else:
        for r in results:
            print(f"k={r['k']:>4} {r['model']:<7} AUC {r['auc_mean']:.3f} ± {r['auc_std']:.3f}  AP {r['ap_mean']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

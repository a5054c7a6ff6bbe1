"""The review → labels → adapt loop on a source the models never saw: leave-one-source-out.

    python benchmarks/adaptation_loso.py --corpus ../shared/corpus --model M.pt --source S [--source S2 ...]
                                         [--labels 0,20,50,100] [--repeats N] [--json]

For each held-out source S: the learned parts (CLIP head, fusion, calibration, tiers, OOD guard)
are fitted by the shipped recipe (:func:`core.learning.base.fit_base_parts`) on the corpus
train and val splits *without* S and written into a copy of ``--model``, with base features
without S beside it; then ``benchmarks/adaptation.py`` runs on every image of S (train, val
and test: none of them was used by those fits).

Fair only when ``--model``'s backbone never saw S either: the official WildRF Tiny-LaDeDa
(``python -m core import-official --arch tiny --weights WildRF_Tiny_LaDeDa.pth --out M.pt``)
never saw any corpus source; the bundled LaDeDa9 saw them all (its column would flatter it).
Prints, per source, the adaptation benchmark's rows (``--json``: ``{"sources": {S: {"results": ...}}}``).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _source_folder(corpus: Path, source: str, out: Path) -> int:
    """``out/<source>/{0_real,1_fake}/`` with links to every corpus image of ``source``."""
    n = 0
    for r in csv.DictReader((corpus / "manifest.csv").open()):
        if r["source"] != source:
            continue
        cls = "1_fake" if r["label"] == "fake" else "0_real"
        dst = out / source / cls / f"{r['split']}-{Path(r['path']).name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink((corpus / r["path"]).resolve(), dst)
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--model", required=True, help="checkpoint whose backbone never saw the held-out sources")
    ap.add_argument("--source", action="append", required=True, help="corpus source to hold out (repeatable)")
    ap.add_argument("--labels", default="0,20,50,100")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cache", default=".cache/features")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import adaptation
    from core.encoders.clip import encoder_status, load_encoder
    from core.learning.base import fit_base_parts
    from core.learning.features import extract_folder
    from core.model.checkpoint import load_checkpoint
    from core.review.artifacts import ArtifactStore
    from core.scoring.detector import Detector
    from unseen_sources import _sources

    corpus = Path(args.corpus)
    encoder = load_encoder()
    if encoder is None:
        print(f"error: {encoder_status()}", file=sys.stderr)
        return 2
    base_ckpt = load_checkpoint(args.model)
    det, cache = Detector(base_ckpt), ArtifactStore(args.cache)
    sets, srcs = {}, {}
    for split in ("train", "val"):
        sets[split] = extract_folder(corpus / split, det, encoder, cache)
        srcs[split] = np.asarray(_sources(sets[split]))
    out: dict[str, object] = {}
    work = Path(tempfile.mkdtemp(prefix="adapt-loso-"))
    try:
        for s in args.source:
            tr = sets["train"].subset(np.flatnonzero(srcs["train"] != s))
            va = sets["val"].subset(np.flatnonzero(srcs["val"] != s))
            ckpt = load_checkpoint(args.model)
            ckpt.learning = fit_base_parts(ckpt, tr, va).to_record()
            model = work / f"without-{s}.pt"
            ckpt.save(model)
            base = model.with_name(model.stem + ".base_features.npz")
            tr.save(base, meta={"split": f"corpus train without {s}"})
            data = work / f"data-{s}"
            n = _source_folder(corpus, s, data)
            if not args.json:
                print(f"== {s}: {n} images, parts fitted without it", flush=True)
            import contextlib
            import io

            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                adaptation.main(["--data", str(data), "--labels", args.labels, "--repeats", str(args.repeats),
                                 "--model", str(model), "--base-data", str(base), "--json"])
            res = json.loads(buf.getvalue().strip().splitlines()[-1])
            out[s] = res
            if not args.json:
                for r in res["results"]:
                    print(f"k={r['k']:>4} {r['model']:<7} AUC {r['auc_mean']:.3f} ± {r['auc_std']:.3f}  "
                          f"AP {r['ap_mean']:.3f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps({"sources": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

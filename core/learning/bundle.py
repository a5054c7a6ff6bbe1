"""Fit the bundled model's learned parts and write them into it, with its base features beside it.

``python -m core.learning.bundle --corpus ../shared/corpus --unseen ../shared/unseen [--model data/models/ladeda9.pt]``
extracts (or reuses, from ``--cache``) the features of the train and val images of every source (the
corpus's ``train/`` and ``val/``; each ``--unseen`` folder's ``<source>/train`` and ``<source>/val``; test
splits are never read), fits the parts on all of them (:func:`core.learning.base.fit_base_parts`),
stores them in the checkpoint's ``learning`` field (the network, spec, LaDeDa calibration and tiers are
unchanged) and writes the compact base features that adapt uses on a fresh machine. Called by
``scripts/build_bundled_models.sh``. Without ``--unseen`` it fits on the corpus alone.

``--hold-out SOURCE`` (repeatable) leaves a source's rows out of the fit and ``--out M.pt`` writes the
result beside instead of over ``--model``: the model a team would have had before it met that source,
for ``benchmarks/loop.py --model M.pt`` on the source's images (leave-one-source-out, fairly).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


from core.learning.features import FeatureSet, ladeda_key

#: The splits the base rows come from (test splits are kept for reporting).
BASE_SPLITS = ("train", "val")


def base_rows(corpus: str | None, unseen: list[str], detector, encoder, cache, *, progress: bool = False,
              splits: tuple[str, ...] = BASE_SPLITS) -> FeatureSet:
    """Features of the given splits of the corpus (``<corpus>/<split>``) and of each unseen-layout folder."""
    from core.learning.features import extract_folder

    parts = []
    if corpus:
        for split in splits:
            if (Path(corpus) / split).is_dir():
                parts.append(extract_folder(Path(corpus) / split, detector, encoder, cache, progress=progress))
    for folder in unseen:
        for source in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
            for split in splits:  # only these splits' images are read (the test splits stay unread)
                if (source / split).is_dir():
                    parts.append(extract_folder(source / split, detector, encoder, cache, progress=progress))
    return FeatureSet.concat(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.learning.bundle")
    ap.add_argument("--corpus", help="corpus folder with train/ and val/ (and manifest.csv)")
    ap.add_argument("--unseen", action="append", default=[],
                    help="folder laid out <source>/{train,val,test}/{0_real,1_fake} with manifest.csv (repeatable)")
    ap.add_argument("--train", help="train features .npz (instead of extracting)")
    ap.add_argument("--val", help="val features .npz (instead of extracting)")
    ap.add_argument("--model", default="data/models/ladeda9.pt")
    ap.add_argument("--cache", default=".cache/features", help="per-image feature cache (git-ignored)")
    ap.add_argument("--base-out", help="base features file (default: <model stem>.base_features.npz beside it)")
    ap.add_argument("--hold-out", action="append", default=[], metavar="SOURCE",
                    help="leave this source's rows out of the fit (repeatable; needs --out)")
    ap.add_argument("--out", help="write the checkpoint here instead of over --model")
    args = ap.parse_args(argv)
    if args.hold_out and not args.out:
        ap.error("--hold-out writes a model that has not seen those sources: give --out (the shipped file stays)")
    import torch

    from core.encoders.clip import load_encoder, encoder_status
    from core.learning.base import fit_base_parts
    from core.model.checkpoint import load_checkpoint
    from core.review.artifacts import ArtifactStore

    ckpt = load_checkpoint(args.model)
    key = ladeda_key(ckpt)
    encoder = load_encoder()
    if encoder is None:
        print(f"error: {encoder_status()}", file=sys.stderr)
        return 2
    if args.train:
        given = [FeatureSet.load(p) for p in (args.train, args.val) if p]
        for fs in given:
            fs.ladeda_key, fs.clip_key = key, encoder.key  # arrays are key-agnostic; same backbone asserted below
        base = FeatureSet.concat(given)
    else:
        if not args.corpus and not args.unseen:
            ap.error("give --corpus and/or --unseen (or --train/--val feature files)")
        from core.scoring.detector import Detector

        base = base_rows(args.corpus, args.unseen, Detector(ckpt), encoder, ArtifactStore(args.cache), progress=True)
    if args.hold_out:
        from core.learning.base import row_sources

        keep = [i for i, s in enumerate(row_sources(base)) if s not in set(args.hold_out)]
        missing = set(args.hold_out) - set(row_sources(base))
        if missing:
            ap.error(f"no base rows from {', '.join(sorted(missing))} (sources: {', '.join(sorted(set(row_sources(base))))})")
        base = base.subset(keep)
    parts = fit_base_parts(ckpt, base)
    ckpt.learning = parts.to_record()
    dtype = "float16" if any(t.dtype == torch.float16 for t in ckpt.state_dict.values()) else "float32"
    out = Path(args.out or args.model)
    ckpt.save(out, dtype=dtype)
    base_out = Path(args.base_out) if args.base_out else out.with_suffix("").with_name(out.stem + ".base_features.npz")
    sources = sorted(set(base.sources))
    base.save(base_out, meta={"split": "train + val of every base source", "sources": sources,
                              "model": out.name,
                              **({"held_out": sorted(args.hold_out)} if args.hold_out else {})})
    rep = parts.ood.fit_report if parts.ood else {}
    print(f"wrote {out}: fusion w_ladeda={parts.fusion.w_ladeda:.3f} w_clip={parts.fusion.w_clip:.3f} "
          f"b={parts.fusion.bias:.3f}; tiers {parts.tiers['real_below']:.3f}/{parts.tiers['fake_at_or_above']:.3f}; "
          f"ood {rep.get('clip+ladeda')}")
    print(f"wrote {base_out} ({base_out.stat().st_size / 1e6:.1f} MB, {len(base)} rows, {len(sources)} sources)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

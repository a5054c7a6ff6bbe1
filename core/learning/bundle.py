"""Fit the bundled model's learned parts and write them into it, with its base features beside it.

``python -m core.learning.bundle --corpus ../shared/corpus [--model data/models/ladeda9.pt]``
extracts (or reuses, from ``--cache``) the train and val features, fits the
parts (:func:`core.learning.base.fit_base_parts`), stores them in the
checkpoint's ``learning`` field (the network, spec, calibration and tiers are
unchanged) and writes the compact corpus-train base features that adapt uses
on a fresh machine. Called by ``scripts/build_bundled_models.sh``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.learning.features import FeatureSet, ladeda_key


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.learning.bundle")
    ap.add_argument("--corpus", help="corpus folder with train/ and val/")
    ap.add_argument("--train", help="train features .npz (instead of extracting)")
    ap.add_argument("--val", help="val features .npz (instead of extracting)")
    ap.add_argument("--model", default="data/models/ladeda9.pt")
    ap.add_argument("--cache", default=".cache/features", help="per-image feature cache (git-ignored)")
    ap.add_argument("--base-out", help="base features file (default: <model stem>.base_features.npz beside it)")
    args = ap.parse_args(argv)
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
    sets = {}
    for split in ("train", "val"):
        given = getattr(args, split)
        if given:
            fs = FeatureSet.load(given)
            fs.ladeda_key, fs.clip_key = key, encoder.key  # arrays are key-agnostic; same backbone asserted below
        else:
            from core.learning.features import extract_folder
            from core.scoring.detector import Detector

            fs = extract_folder(Path(args.corpus) / split, Detector(ckpt), encoder, ArtifactStore(args.cache),
                                progress=True)
        sets[split] = fs
    parts = fit_base_parts(ckpt, sets["train"], sets["val"])
    ckpt.learning = parts.to_record()
    dtype = "float16" if any(t.dtype == torch.float16 for t in ckpt.state_dict.values()) else "float32"
    ckpt.save(args.model, dtype=dtype)
    base_out = Path(args.base_out) if args.base_out else Path(args.model).with_suffix("").with_name(
        Path(args.model).stem + ".base_features.npz")
    sets["train"].save(base_out, meta={"split": "corpus train", "model": Path(args.model).name})
    rep = parts.ood.fit_report if parts.ood else {}
    print(f"wrote {args.model}: fusion w_ladeda={parts.fusion.w_ladeda:.3f} w_clip={parts.fusion.w_clip:.3f} "
          f"b={parts.fusion.bias:.3f}; tiers {parts.tiers['real_below']:.3f}/{parts.tiers['fake_at_or_above']:.3f}; "
          f"ood {rep.get('clip+ladeda')}")
    print(f"wrote {base_out} ({base_out.stat().st_size / 1e6:.1f} MB, {len(sets['train'])} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

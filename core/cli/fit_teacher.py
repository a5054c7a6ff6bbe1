"""``fit-teacher``: fit the hand-made patch teacher that ``train --patch-teacher`` regresses."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit-teacher", help="fit a linear patch teacher on local residual statistics (train/)")
    p.add_argument("--data", required=True, help="folder with train/ (and val/) in the WildRF layout")
    p.add_argument("--out", required=True, help="teacher file to write")
    p.add_argument("--resize-mode", default="none", choices=["stretch", "shorter_side", "none"],
                   help="use the same preprocessing as the training run that will read the teacher")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--max-side", type=int, default=768)
    p.add_argument("--l2", type=float, default=0.01, help="inverse L2 strength (scikit-learn's C)")
    p.add_argument("--sd-floor", type=float, default=0.01,
                   help="smallest spread used to standardise a descriptor (keeps patch logits well scaled)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np
    from sklearn.metrics import average_precision_score, roc_auc_score

    from core.training.patch_teacher import fit_patch_teacher, image_descriptor
    from core.model.preprocess import PreprocessSpec
    from core.training.training_data import load_cached

    spec = PreprocessSpec(input_representation="NPR", resize_mode=args.resize_mode, size=(args.size, args.size),
                          max_side=args.max_side)
    data = Path(args.data)
    train, _ = load_cached(data / "train", spec, progress=not args.no_progress)
    teacher = fit_patch_teacher([im.pixels for im in train], [im.label for im in train], l2=args.l2, sd_floor=args.sd_floor)
    summary: dict = {"out": str(args.out), "n_train": len(train)}
    if (data / "val").is_dir():
        val, _ = load_cached(data / "val", spec, progress=not args.no_progress)
        w = teacher.weights.numpy().astype(np.float64)
        z = np.array([image_descriptor(im.pixels) @ w + teacher.bias for im in val])
        y = np.array([im.label for im in val])
        if len(set(y)) == 2:
            summary.update(val_auc=round(float(roc_auc_score(y, z)), 4),
                           val_ap=round(float(average_precision_score(y, z)), 4))
        teacher.info.update({k: summary[k] for k in ("val_auc", "val_ap") if k in summary})
    teacher.info["spec"] = {"resize_mode": args.resize_mode, "size": args.size, "max_side": args.max_side}
    teacher.save(args.out)
    print(json.dumps(summary))
    return 0

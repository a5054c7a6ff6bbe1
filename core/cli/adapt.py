"""``adapt``: refit the LaDeDa head, CLIP head and fusion on reviewer labels; write a new checkpoint.

Uses the features stored when the labelled items were scored (no new forward
pass), evaluates out of fold with folds by labelling time, refuses too few
labels or a fit worse than the active model (unless ``--force``), writes
``--out`` and, with ``--register``, saves it as a model version in the data
directory (activate / roll back like calibration versions).
"""
from __future__ import annotations

import argparse
import json
import sys

from core.cli._db import add_db_option, open_db


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("adapt", help="refit heads + fusion on reviewer labels (stored features), write a checkpoint")
    add_db_option(p)
    p.add_argument("--out", required=True, help="adapted checkpoint to write")
    p.add_argument("--model", help="model to adapt (default: the active version, else the bundled model)")
    p.add_argument("--base-data", metavar="DIR",
                   help="base training data: a labelled image folder (0_real/1_fake) or a features .npz "
                        "(default: the bundled model's shipped base features, when they match)")
    p.add_argument("--no-base-data", action="store_true", help="fit on reviewer labels only (pull to current heads)")
    p.add_argument("--min-per-class", type=int, default=20, help="refuse with fewer labels per class (default 20)")
    p.add_argument("--force", action="store_true", help="save even when worse out of fold than the active model")
    p.add_argument("--register", action="store_true", help="also save as a model version in the data directory")
    p.add_argument("--activate", action="store_true", help="with --register: serve the new version")
    p.add_argument("--by", default=None, help="who adapts (recorded in the provenance)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.model.checkpoint import load_checkpoint
    from core.model.registry import ModelRegistry
    from core.review.actions.adapt import adapt_from_store

    registry = ModelRegistry()
    ckpt = load_checkpoint(args.model or registry.active().path)
    store = open_db(args)
    try:
        result = adapt_from_store(store, ckpt, base_data=args.base_data, use_base=not args.no_base_data,
                                  min_per_class=args.min_per_class, force=args.force, by=args.by)
    finally:
        store.close()
    sha = result.save(args.out)
    out = {**result.report, "out": str(args.out), "model_sha256": sha}
    if args.register:
        version = result.register(registry, by=args.by, activate=args.activate)
        out["version"] = version.id
    if args.json:
        print(json.dumps(out, default=str))
        return 0
    cv = result.report["cv"]
    print(f"adapted on {out['n_labels']} reviewer labels (folds by labelling time: {cv['folds']})")
    print(f"{'out of fold':<14}{'AUC':>8}{'AP':>8}{'ECE':>8}{'review':>8}")
    for name in ("before", "after"):
        m = cv[name]
        print(f"{name:<14}{m['auc']:>8.3f}{m['ap']:>8.3f}{m['ece']:>8.3f}{m['review_share']:>8.2f}")
    for name, m in cv["parts_after"].items():
        print(f"  {name:<12}{m['auc']:>8.3f}{m['ap']:>8.3f}")
    if result.report.get("forced"):
        print("note: saved although worse out of fold (--force)", file=sys.stderr)
    print(f"wrote {args.out} (sha256 {sha[:16]}…)" + (f"; registered as {out['version']}" if "version" in out else ""))
    return 0

"""``probe``: does the verdict survive benign edits? (JPEG q90/q75/q50, downscale ×0.75/×0.5, 10 % centre crop)

``--json`` prints one object per file: ``{"file", "variants": [{"name",
"probability", "tier", ...}], "flips", ...}``; without it, a table. With
``--db`` the image is scored into the review store (as ``score --db`` does),
the probe is stored with that scoring, and a flip sends the item to review.
"""
from __future__ import annotations

import argparse
import json

from core.cli._db import add_db_option, open_db


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="stability probe: re-score after benign re-encodes, resizes and a crop")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per file instead of a table")
    p.add_argument("--model", help="checkpoint (default: the bundled model or $LADEDA_MODEL)")
    add_db_option(p, help="also record the scoring and the probe in this review database; a flip queues the item")
    p.add_argument("--by", default=None, help="who ran the probe (recorded with --db)")
    p.set_defaults(func=run)


def _table(out: dict) -> str:
    lines = [out["file"], f"  {'variant':<20} {'P(fake)':>8}  tier"]
    for v in [out["original"], *out["variants"]]:
        p = "—" if v["probability"] is None else f"{v['probability']:.3f}"
        mark = "  FLIP" if v.get("flipped") else ("  (skipped: " + v["skipped"] + ")" if v.get("skipped") else "")
        lines.append(f"  {v['name']:<20} {p:>8}  {v['tier'] or '—'}{mark}")
    lines.append("  " + out["summary"])
    if "recorded" in out:
        rec = out["recorded"]
        lines.append(f"  stored with scoring {rec['scoring_id']}" + (" · queued for review" if rec["queued"] else ""))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from core.errors import DetectorError
    from core.model.registry import weights_key
    from core.scoring.detector import Detector
    from core.scoring.probe import probe, record_probe

    detector = Detector.load(args.model)
    store = open_db(args) if hasattr(args, "db") else None
    failures = 0
    try:
        for f in args.files:
            try:
                decoded = detector.decode(f)
                result = probe(detector, decoded, name=str(f))
                out = result.to_json()
                if store is not None:
                    from core.scoring.analysis import analyse, record_analysis

                    record_analysis(store, analyse(detector, decoded, name=str(f)), name=str(f), uploader=args.by)
                    out["recorded"] = record_probe(store, result, model_key=weights_key(detector.checkpoint),
                                                   by=args.by)
            except DetectorError as exc:
                failures += 1
                out = {"file": str(f), "error": str(exc)}
                if not args.json:
                    print(f"{f}: error: {exc}", flush=True)
                    continue
            print(json.dumps(out) if args.json else _table(out), flush=True)
    finally:
        if store is not None:
            store.close()
    return 1 if failures == len(args.files) else 0

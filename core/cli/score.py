"""``score``: score image files, one JSON object per line and file.

Each line carries the score (logit, calibrated probability, patch-map shape,
poolings, top patches), the policy's ``tier`` and ``reasons``, and the
``guardrails`` findings. With ``--db`` every scoring is also recorded in the
review store and review-tier items are queued.
"""
from __future__ import annotations

import argparse
import json
import sys

from tqdm import tqdm


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score image files (JSON lines on stdout)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--model", help="checkpoint (default: the bundled model or $LADEDA_MODEL)")
    p.add_argument("--json", action="store_true", help="JSON lines output (the default; kept for scripts)")
    p.add_argument("--db", help="record scorings in this review-store SQLite file (queues review-tier items)")
    p.add_argument("--uploader", default=None, help="who submitted the files (stored with --db)")
    p.add_argument("--no-guardrails", action="store_true", help="skip faces/quality/metadata checks")
    p.add_argument("--top-k", type=int, default=5, help="most-fake patches to report")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.scoring.analysis import analyse, record_analysis
    from core.scoring.detector import Detector
    from core.errors import DetectorError

    detector = Detector.load(args.model)
    store = None
    if args.db:
        from core.review.store import ReviewStore

        store = ReviewStore.open(args.db)
    failures = 0
    show = len(args.files) > 1 and not args.no_progress
    try:
        for f in tqdm(args.files, desc="scoring", unit="img", disable=not show, file=sys.stderr):
            try:
                analysis = analyse(detector, f, name=str(f), guardrails=not args.no_guardrails, top_k=args.top_k)
                line = analysis.to_json()
                if store is not None:
                    line["scoring_id"] = record_analysis(store, analysis, name=str(f), uploader=args.uploader)
                    line["queued"] = store.item(analysis.score.sha256).get("queue_state")
            except DetectorError as exc:
                failures += 1
                line = {"file": str(f), "error": str(exc)}
            print(json.dumps(line), flush=True)
    finally:
        if store is not None:
            store.close()
    return 1 if failures == len(args.files) else 0

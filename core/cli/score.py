"""``score``: score image files, one JSON object per line and file."""
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
    p.add_argument("--top-k", type=int, default=5, help="most-fake patches to report")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..detector import Detector, ScoreFailure

    detector = Detector.load(args.model)
    failures = 0
    show = len(args.files) > 1 and not args.no_progress
    for f in tqdm(args.files, desc="scoring", unit="img", disable=not show, file=sys.stderr):
        result = next(iter(detector.score_many([f])))
        if isinstance(result, ScoreFailure):
            failures += 1
        print(json.dumps(result.to_json()), flush=True)
    return 1 if failures == len(args.files) else 0

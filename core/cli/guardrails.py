"""``guardrails``: faces, quality and metadata findings for image files, without a verdict.

One JSON object per line and file. With ``--model`` each face crop is scored
by that checkpoint (per-face probability and logit); without it only faces are
detected, which needs no model at all.
"""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("guardrails", help="faces / quality / metadata findings (JSON lines on stdout)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--model", help="checkpoint that scores each face crop (default: faces are not scored)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.errors import DetectorError
    from core.scoring.guardrails import run_guardrails
    from core.imageio import decode_image

    detector = None
    if args.model:
        from core.scoring.detector import Detector

        detector = Detector.load(args.model)
    failures = 0
    for f in args.files:
        try:
            decoded = detector.decode(f) if detector is not None else decode_image(f)
            out = {"file": str(f), **run_guardrails(decoded, detector).to_json()}
        except DetectorError as exc:
            failures += 1
            out = {"file": str(f), "error": str(exc)}
        print(json.dumps(out), flush=True)
    return 1 if failures == len(args.files) else 0

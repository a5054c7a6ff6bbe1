"""``bias-report``: per-class format / JPEG quality / size / EXIF, with shortcut warnings."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bias-report", help="check whether file properties alone separate real from fake")
    p.add_argument("--data", required=True, help="WildRF-layout folder (0_real/1_fake at any depth)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.training.bias import bias_report, format_report

    report = bias_report(args.data)
    print(json.dumps(report.to_json(), indent=2) if args.json else format_report(report))
    return 0

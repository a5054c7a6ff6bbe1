"""``verify-report``: check an evidence report against the review store.

Recomputes the report's hash chain, compares every event row with the store's
event and the embedded image with its SHA-256. Exit status 0 when verified,
1 when not (the problems are listed), 2 on an unreadable file or database.
"""
from __future__ import annotations

import argparse
import json

from core.cli._db import add_db_option, open_db


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify-report", help="check an evidence report (hash chain, events, image) against the store")
    add_db_option(p)
    p.add_argument("report", metavar="FILE.html")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.review.report import verify_report

    store = open_db(args)
    try:
        result = verify_report(args.report, store)
    finally:
        store.close()
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(result.summary())
        for p in result.problems:
            print(f"  - {p}")
        for n in result.notes:
            print(f"  note: {n}")
    return 0 if result.ok else 1

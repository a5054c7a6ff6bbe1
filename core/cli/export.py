"""``export``: write a labelled batch (recalibration CSV/JSONL + hard-negative zip), print paths as JSON."""
from __future__ import annotations

import argparse
import json

from core.cli._db import add_db_option, open_db

#: Kept literal so building the parser does not import the store (same as core.review.store.LABELS).
LABELS = ("real", "fake", "unsure")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export labelled items: recalibration CSV/JSONL and hard-negative zip")
    add_db_option(p)
    p.add_argument("--out", help="folder for the exported files (required unless --preview/--history)")
    p.add_argument("--since", help="labelled at or after (ISO-8601, UTC if no offset)")
    p.add_argument("--until", help="labelled before (ISO-8601)")
    p.add_argument("--reviewer", help="only labels by this reviewer")
    p.add_argument("--label", choices=list(LABELS), help="only this label")
    p.add_argument("--model", dest="model_sha256", help="only items scored by this model (SHA-256); its scoring is used")
    p.add_argument("--all", dest="only_new", action="store_false",
                   help="include labels already exported (default: only not-yet-exported ones)")
    p.add_argument("--include-all-reviewed", action="store_true",
                   help="put every real/fake-labelled item in the zip, not only hard negatives")
    p.add_argument("--by", dest="exported_by", help="who exports (recorded)")
    p.add_argument("--repeat", metavar="EXPORT_ID", help="write a recorded export again (same items)")
    p.add_argument("--preview", action="store_true", help="print counts and hard negatives; write nothing")
    p.add_argument("--history", action="store_true", help="print recorded exports; write nothing")
    p.add_argument("--sqlite", metavar="OUT.sqlite",
                   help="also write the batch as a SQLite file (items, scorings, labels) to open in Datasette")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.review.store import StoreError

    filters = {"since": args.since, "until": args.until, "reviewer": args.reviewer, "label": args.label,
               "model_sha256": args.model_sha256, "only_new": args.only_new}
    if not args.out and not (args.history or args.preview):
        raise StoreError("--out DIR is required to write an export (or use --preview / --history).")
    with open_db(args) as store:
        if args.history:
            result = store.export_history()
        elif args.preview:
            result = store.export_preview(filters, include_all_reviewed=args.include_all_reviewed)
        else:
            if args.repeat:
                result = store.repeat_export(args.repeat, args.out, exported_by=args.exported_by,
                                             sqlite=args.sqlite)
            else:
                result = store.export_batch(args.out, include_all_reviewed=args.include_all_reviewed,
                                            exported_by=args.exported_by, sqlite=args.sqlite, **filters)
    print(json.dumps(result))
    return 0

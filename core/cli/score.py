"""``score``: score image files, one JSON object per line and file.

Each line carries the score (logit, calibrated probability, patch-map shape,
poolings, top patches, the ``precision`` that served), the policy's ``tier``
and ``reasons``, and the ``guardrails`` findings. With ``--db`` every scoring
is also recorded in the review store and review-tier items are queued.

Every file is checked (readable, image header, pixel limit) before the model
loads, so a bad file is answered at once: its error line comes first, and when
no file passes the model is never loaded.

Exit codes: 0 every file scored, 1 some files failed, 2 every file failed or a
usage error (bad option, missing database, unreadable model).
"""
from __future__ import annotations

import argparse
import json
import sys

from core.cli._db import add_db_option

EXIT_OK, EXIT_SOME_FAILED, EXIT_ALL_FAILED = 0, 1, 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score image files (JSON lines on stdout; exit 0 all scored, 1 some failed, "
                                     "2 all failed or usage error)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--model", help="checkpoint (default: the bundled model or $LADEDA_MODEL)")
    p.add_argument("--json", action="store_true", help="JSON lines output (the default; kept for scripts)")
    add_db_option(p, help="record scorings in this review store (queues review-tier items)")
    p.add_argument("--uploader", default=None, help="who submitted the files (stored with --db)")
    p.add_argument("--no-guardrails", action="store_true", help="skip faces/quality/metadata checks")
    p.add_argument("--top-k", type=int, default=5, help="most-fake patches to report")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def exit_code(n_files: int, n_failed: int) -> int:
    """0 all scored, 1 some failed, 2 all failed."""
    if n_failed == 0:
        return EXIT_OK
    return EXIT_ALL_FAILED if n_failed >= n_files else EXIT_SOME_FAILED


def _print(line: dict) -> None:
    print(json.dumps(line), flush=True)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from core.errors import DetectorError
    from core.imageio import check_image

    store = None
    if getattr(args, "db", None) is not None:
        from core.cli._db import open_db

        store = open_db(args)  # a missing database is refused before anything else happens
    try:
        passed: list[str] = []
        for f in args.files:
            try:
                check_image(f)
                passed.append(f)
            except DetectorError as exc:
                _print({"file": str(f), "error": str(exc)})
        failures = len(args.files) - len(passed)
        if not passed:
            return exit_code(len(args.files), failures)

        from core.review.actions.submit import submit
        from core.scoring.analysis import analyse, record_analysis
        from core.scoring.detector import Detector

        detector = Detector.load(args.model)
        show = len(passed) > 1 and not args.no_progress
        for f in tqdm(passed, desc="scoring", unit="img", disable=not show, file=sys.stderr):
            try:
                if store is not None and not args.no_guardrails:
                    # the dashboard's door: recorded with its evidence, so Review shows it without a model pass
                    sub = submit(detector, _read(f), str(f), store, uploader=args.uploader, rescore=True,
                                 top_k=args.top_k)
                    line = sub.analysis.to_json()
                    line["scoring_id"], line["queued"] = sub.scoring_id, sub.queue_state
                else:
                    analysis = analyse(detector, f, name=str(f), guardrails=not args.no_guardrails,
                                       top_k=args.top_k)
                    line = analysis.to_json()
                    if store is not None:
                        line["scoring_id"] = record_analysis(store, analysis, name=str(f), uploader=args.uploader)
                        line["queued"] = store.item(analysis.score.sha256).get("queue_state")
            except DetectorError as exc:
                failures += 1
                line = {"file": str(f), "error": str(exc)}
            _print(line)
        return exit_code(len(args.files), failures)
    finally:
        if store is not None:
            store.close()


def _read(path: str) -> bytes:
    from core.errors import ImageDecodeError

    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ImageDecodeError(f"Cannot read {path}: {exc.strerror or exc}.") from None

"""``report``: a self-contained HTML evidence report for one stored item.

``python -m core report --db DB --sha256 SHA --out FILE.html``: the image and
its hash, model / calibration / preprocessing identity, the verdict recomputed
and compared with the stored one, heatmap, top patches, guardrails, stability
probe, forensic views, and every event under a hash chain. The model is
``--model`` or the one the dashboard serves from that database's folder
(the registry's active version, else the base checkpoint). Check a report
with ``python -m core verify-report``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.cli._db import add_db_option, open_db


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="HTML evidence report for one stored item (hash-chained history)")
    add_db_option(p)
    p.add_argument("--sha256", required=True, metavar="SHA", help="the item's SHA-256")
    p.add_argument("--out", required=True, metavar="FILE.html", help="where to write the report")
    p.add_argument("--model", help="checkpoint (default: the active model version beside the database)")
    p.add_argument("--by", default=None, help="who made the report (printed in it)")
    p.add_argument("--no-probe", action="store_true", help="leave the stability probe out when none is stored")
    p.set_defaults(func=run)


def model_for(args: argparse.Namespace, store) -> Path:
    """``--model``, else what the dashboard on this data directory serves."""
    if args.model:
        return Path(args.model)
    from core.model.registry import ModelRegistry

    return ModelRegistry(Path(store.db_path).parent / "models").active().path


def run(args: argparse.Namespace) -> int:
    from core.review.report import build_report
    from core.scoring.detector import Detector

    store = open_db(args)
    try:
        detector = Detector.load(model_for(args, store))
        report = build_report(store, args.sha256, detector, generated_by=args.by, probe=not args.no_probe)
        path = report.write(args.out)
    finally:
        store.close()
    print(json.dumps({"out": str(path), "sha256": report.sha256, "events": len(report.events),
                      "chain_head": report.head, "reproduced": report.reproduced}))
    return 0

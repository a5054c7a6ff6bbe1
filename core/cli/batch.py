"""``batch``: score a folder or manifest into one Parquet file (engines ``local`` and ``ray``).

Prints one JSON summary line (images, scored, errors, seconds, images_per_s
and, with ``--db``, ingested / already_stored). Exit codes as ``score``:
0 every image scored, 1 some failed, 2 all failed or a usage error.
"""
from __future__ import annotations

import argparse
import json

from core.cli._db import add_db_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batch", help="score a folder or manifest into RESULTS.parquet (local or Ray Data)")
    p.add_argument("--input", required=True, metavar="DIR_OR_MANIFEST",
                   help="folder (recursive) or a CSV/Parquet manifest with a 'path' column")
    p.add_argument("--out", required=True, metavar="RESULTS.parquet", help="Parquet file to write (one row per input)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process, no Ray needed (default); ray: Ray Data map_batches")
    p.add_argument("--ray-address", default=None, metavar="ADDRESS",
                   help="Ray cluster to use: 'auto' (the one this machine joined) or ray://HOST:10001; "
                        "default: start a local cluster")
    add_db_option(p, help="ingest the results into this review store (idempotent by image and model; "
                          "queues review-tier items)")
    p.add_argument("--uploader", default=None, help="who submitted the images (stored with --db)")
    p.add_argument("--model", help="checkpoint (default: the bundled model or $LADEDA_MODEL)")
    p.add_argument("--batch-size", type=int, default=16, help="rows per call of the scorer (default 16)")
    p.add_argument("--no-guardrails", action="store_true", help="skip faces/quality/metadata checks")
    p.add_argument("--concurrency", type=int, default=None,
                   help="ray: number of scoring actors (default: cluster CPUs / --cpus-per-actor)")
    p.add_argument("--cpus-per-actor", type=float, default=1.0, help="ray: CPUs each actor reserves (default 1)")
    p.add_argument("--num-cpus", type=int, default=None, help="ray: CPUs of a local cluster started here")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.batch.engines import RayOptions
    from core.batch.job import run_batch
    from core.cli.score import exit_code

    db = None
    if getattr(args, "db", None) is not None:
        from core.cli._db import open_db

        open_db(args).close()  # refuse a missing database (or create it with --create) before any model loads
        db = args.db
    summary = run_batch(args.input, args.out, engine=args.engine, model=args.model, db=db, uploader=args.uploader,
                        guardrails=not args.no_guardrails, batch_size=args.batch_size, progress=not args.no_progress,
                        ray=RayOptions(address=args.ray_address, concurrency=args.concurrency,
                                       cpus_per_actor=args.cpus_per_actor, num_cpus=args.num_cpus))
    print(json.dumps(summary))
    return exit_code(summary["images"], summary["errors"])

"""Batch throughput: ``python benchmarks/bench_batch.py --input DIR [--engine local|ray] [--json]``.

Runs ``core.batch.job.run_batch`` (the same door as ``python -m core batch``)
over DIR into a temporary Parquet file and prints the images, the wall-clock
seconds from the first row to the last (model loading included, Ray start-up
included for ``--engine ray``), images per second and the number of error rows.
Figures, never assertions: run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True, help="folder (recursive) or manifest to score")
    ap.add_argument("--engine", choices=["local", "ray"], default="local")
    ap.add_argument("--model", help="checkpoint (default: the bundled model or $LADEDA_MODEL)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--no-guardrails", action="store_true")
    ap.add_argument("--ray-address", default=None)
    ap.add_argument("--concurrency", type=int, default=None, help="ray: scoring actors")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)

    from core.batch.engines import RayOptions
    from core.batch.job import run_batch

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = run_batch(args.input, Path(tmp) / "results.parquet", engine=args.engine, model=args.model,
                            guardrails=not args.no_guardrails, batch_size=args.batch_size, progress=not args.json,
                            ray=RayOptions(address=args.ray_address, concurrency=args.concurrency))
        seconds = time.perf_counter() - t0
    out = {"images": summary["images"], "seconds": round(seconds, 3),
           "images_per_s": round(summary["images"] / seconds, 4), "errors": summary["errors"]}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.engine}: {out['images']} images in {out['seconds']:.1f} s = {out['images_per_s']:.3f} img/s, "
              f"{out['errors']} errors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

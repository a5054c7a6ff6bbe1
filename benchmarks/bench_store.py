"""Review-store benchmark: ``python benchmarks/bench_store.py [--items N] [--export-items M] [--db URL]``.

Builds a store with N queued, scored items (default 100,000) on a real SQLite
file (or on the empty PostgreSQL database named by ``--db URL``), then prints the median and 95th-percentile latency of ``claim_next``
and of ``label`` (each its own durable transaction), and the time to export M
labelled items (default 10,000) with every image in the zip. Figures, never
assertions: targets are <= 10 ms median per call and <= 10 s per export.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa  # noqa: E402

from core.review.store import ReviewStore  # noqa: E402


def _populate(store: ReviewStore, n: int, big: int, big_bytes: int, chunk: int = 5000) -> list[str]:
    shas: list[str] = []
    for start in range(0, n, chunk):
        with store.batch():
            for i in range(start, min(n, start + chunk)):
                size = big_bytes if i < big else 256
                data = i.to_bytes(8, "little") + os.urandom(size - 8)
                sha = store.add_item(data, name=f"img{i}.jpg", uploader="bench")
                p = 0.2 + 0.6 * ((i * 7919) % n) / n
                store.record_scoring(sha, model_sha256="a" * 64, model_label="LaDeDa9", preprocess_fingerprint="fp",
                                     calibration_version="v1", logit=(p - 0.5) * 8, probability=p, tier="review",
                                     reasons=["mid-confidence"], guardrails={}, timings={"total": 50.0})
                shas.append(sha)
    return shas


def _ms(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"median_ms": round(statistics.median(s) * 1e3, 3), "p95_ms": round(s[int(0.95 * (len(s) - 1))] * 1e3, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--export-items", type=int, default=10_000)
    ap.add_argument("--image-bytes", type=int, default=20_000, help="size of each exported image")
    ap.add_argument("--samples", type=int, default=500, help="claim+label pairs timed")
    ap.add_argument("--dir", help="work folder (default: a temporary folder, removed afterwards)")
    ap.add_argument("--db", help="an EMPTY PostgreSQL database URL to benchmark instead of a SQLite file")
    args = ap.parse_args(argv)

    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench_store_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        store = ReviewStore(args.db or work / "bench.sqlite", image_dir=work / "images")
        t = time.perf_counter()
        shas = _populate(store, args.items, args.export_items, args.image_bytes)
        setup_s = time.perf_counter() - t
        print(f"setup: {len(shas)} items scored and queued in {setup_s:.1f} s", file=sys.stderr)

        t = time.perf_counter()
        claims, labels = [], []
        for i in range(args.samples):
            t0 = time.perf_counter()
            item = store.claim_next(f"rev{i % 8}")
            t1 = time.perf_counter()
            store.label(item["sha256"], ("real", "fake", "unsure")[i % 3], f"rev{i % 8}", seconds_spent=3.0)
            t2 = time.perf_counter()
            claims.append(t1 - t0)
            labels.append(t2 - t1)
        stats = store.queue_stats()
        print(f"timed {args.samples} claim+label pairs in {time.perf_counter() - t:.1f} s", file=sys.stderr)

        # label the big-image items (label-now path, one batch) so M items are labelled in all
        t = time.perf_counter()
        already = store.conn.execute(sa.text("SELECT count(*) FROM current_labels")).scalar_one()
        labelled_now = {r[0] for r in store.conn.execute(sa.text("SELECT sha256 FROM current_labels"))}
        todo = [s for s in shas[: args.export_items] if s not in labelled_now]
        with store.batch():
            for j, sha in enumerate(todo[: max(0, args.export_items - already)]):
                store.label(sha, "real" if j % 2 else "fake", "bulk")
        print(f"labelled {len(todo)} more items in one batch in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        n_labelled = store.conn.execute(sa.text("SELECT count(*) FROM current_labels")).scalar_one()
        t = time.perf_counter()
        out = store.export_batch(work / "exports", include_all_reviewed=True, exported_by="bench")
        export_s = time.perf_counter() - t
        store.close()

        report = {
            "database": store.dialect, "items": len(shas), "queue_after": stats,
            "claim_next": _ms(claims), "label": _ms(labels),
            "export": {"labelled_items": n_labelled, "seconds": round(export_s, 2), "counts": out["counts"],
                       "zip_mb": round(out["files"]["zip"]["bytes"] / 2**20, 1)},
            "setup_seconds": round(setup_s, 1),
        }
        print(json.dumps(report, indent=2))
        print(f"{store.dialect}: claim_next median {report['claim_next']['median_ms']} ms, label median "
              f"{report['label']['median_ms']} ms at {len(shas)} items; export of {n_labelled} labelled items "
              f"in {export_s:.2f} s")
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

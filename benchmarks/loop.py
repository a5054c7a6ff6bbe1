"""The review → label → learn loop, measured in reviewer work: what k labels buy on a new source.

    python benchmarks/loop.py --data DIR [--budget 0,50,100,200] [--order queue|random] [--batch 25]
                              [--repeats N] [--store KEEP_DIR] [--model M.pt] [--json]

DIR is laid out like ``../shared/corpus/test`` (``<source>/{0_real,1_fake}/``): the images of a
new source. Every image is scored once through the product's upload door
(:func:`core.review.actions.submit.submit`, guardrails included) into a store, queued as the
policy queues them (review tier). ``--store KEEP_DIR`` keeps that scored store and reuses it.

Then, per repeat, in a copy of that store and a fresh model registry on ``--model``: simulated
reviewers claim through the store (``--order queue``: the order the product serves, the active
model's uncertainty first; ``random``: uniformly among the unlabelled images) and label with the
truth through the decide door, ``--batch`` labels at a time. After each batch the product's own
background learning (:func:`core.learning.background.maybe_learn`, the path the dashboard takes
after a label) runs with every ``--batch`` labels as its trigger, and the benchmark waits for it.
At each budget k it reports, over the images not yet labelled and with the verdicts the product
would now serve (tiers, policy rules, OOD guard; from stored features, no image scored again):
AUC and AP; the share with a clear tier; the accuracy of those clear verdicts; the share of reals
called clearly fake; the seconds spent adapting so far. Means over repeats (at least 2).

Leave-one-source-out: ``python -m core.learning.bundle ... --hold-out S --out M.pt`` writes a model
whose parts never saw S, with its base features beside it; ``--model M.pt`` then learns on those base
rows (``$LADEDA_BASE_FEATURES``), not on the bundled ones, which include S.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULT_MODEL = "data/models/ladeda9.pt"


def score_into(store_dir: Path, data: str, model: str | None, *, quiet: bool = False) -> tuple[dict[str, int], int]:
    """Score every labelled image under ``data`` once through the upload door into ``store_dir``.

    Returns ``({sha256: 1 fake / 0 real}, newly scored)``; images whose scoring by this model is
    already in a kept store are not scored again."""
    from core.learning.features import labelled_files
    from core.review.actions.submit import submit
    from core.review.store import ReviewStore
    from core.scoring.detector import Detector

    det = None
    store_dir.mkdir(parents=True, exist_ok=True)
    store = ReviewStore(store_dir / "r.sqlite", second_review_share=None)
    truth: dict[str, int] = {}
    files = labelled_files(data)
    scored = 0
    try:
        for i, (f, label, _) in enumerate(files):
            raw = f.read_bytes()
            sha = hashlib.sha256(raw).hexdigest()
            truth[sha] = label
            if store.has_item(sha) and store.latest_scoring(sha) is not None:
                continue
            if det is None:
                det = Detector.load(model or DEFAULT_MODEL)
            submit(det, raw, f.name, store, uploader="benchmark")
            scored += 1
            if not quiet and scored % 10 == 0:
                print(f"scored {scored} (image {i + 1}/{len(files)})", file=sys.stderr, flush=True)
    finally:
        store.close()
    return truth, scored


def _evaluate(store: Any, registry: Any, truth: dict[str, int], rest: list[str]) -> dict[str, Any]:
    """The verdicts the product would now serve on the images not yet labelled (stored features)."""
    from core.calibration.metrics import auc, average_precision
    from core.learning.adapt import verdict_figures
    from core.learning.verdicts import stored_verdicts
    from core.model.checkpoint import load_checkpoint

    active = load_checkpoint(registry.active().path)
    v = stored_verdicts(store.artifacts, active, rest)
    shas = [s for s in rest if s in v]
    y = np.asarray([truth[s] for s in shas])
    p = np.asarray([v[s].probability for s in shas])
    t = np.asarray([v[s].tier for s in shas], dtype=object)
    both = len(set(y.tolist())) == 2
    return {"auc": float(auc(p, y)) if both else None, "ap": float(average_precision(p, y)) if both else None,
            **verdict_figures(t, y), "n_rest": len(shas), "version": registry.active().name}


def _copy_store(base_dir: Path, work: Path) -> None:
    """A private copy of the scored store: the database through SQLite's backup (consistent even while
    another run has it open), images and features as files."""
    import sqlite3

    shutil.copytree(base_dir, work, ignore=shutil.ignore_patterns("r.sqlite*"))
    src, dst = sqlite3.connect(base_dir / "r.sqlite"), sqlite3.connect(work / "r.sqlite")
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def run_once(base_dir: Path, work: Path, model: str, truth: dict[str, int], budgets: list[int], order: str,
             batch: int, seed: int) -> list[dict[str, Any]]:
    """One simulated team: claim (or pick at random), label with the truth, learn in the background."""
    from core.learning import background
    from core.model.registry import ModelRegistry
    from core.review.actions import decide
    from core.review.store import ReviewStore

    _copy_store(base_dir, work)
    store = ReviewStore(work / "r.sqlite", second_review_share=None)
    registry = ModelRegistry(work / "models", base=model)
    rng = np.random.default_rng(seed)
    labelled: set[str] = set()
    adapt_s = 0.0
    out: list[dict[str, Any]] = []
    try:
        background.maybe_learn(store, registry, every=batch, activate="auto", wait=True)  # priorities, if stale
        for k in sorted(set(budgets)):
            while len(labelled) < min(k, len(truth) - 2):
                sha = None
                if order == "queue":
                    got = decide.claim(store, "sim-reviewer")
                    sha = got.sha256
                if sha is None:  # random order, or nothing left in the queue: any unlabelled image
                    rest = sorted(set(truth) - labelled)
                    sha = rest[int(rng.integers(len(rest)))]
                decide.label(store, sha, "fake" if truth[sha] else "real", "sim-reviewer")
                labelled.add(sha)
                if len(labelled) % batch == 0:  # the product's own background learning, waited for
                    t0 = time.perf_counter()
                    background.maybe_learn(store, registry, every=batch, activate="auto", wait=True)
                    adapt_s += time.perf_counter() - t0
            res = _evaluate(store, registry, truth, sorted(set(truth) - labelled))
            out.append({"k": k, **res, "adapt_s": round(adapt_s, 2)})
    finally:
        store.close()
        shutil.rmtree(work, ignore_errors=True)
    return out


FIELDS = ("auc", "ap", "clear_share", "clear_accuracy", "reals_clearly_fake", "adapt_s")


def _mean(values: list[Any]) -> float | None:
    got = [float(v) for v in values if v is not None]
    return round(float(np.mean(got)), 4) if got else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/loop.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a new source: <source>/{0_real,1_fake}/ below it")
    ap.add_argument("--budget", default="0,50,100,200", help="label budgets k (comma-separated)")
    ap.add_argument("--order", choices=("queue", "random"), default="queue")
    ap.add_argument("--batch", type=int, default=25, help="labels between background learning steps")
    ap.add_argument("--repeats", type=int, default=2, help="repeats (at least 2; means are reported)")
    ap.add_argument("--store", default=None, help="folder for the scored store, kept and reused")
    ap.add_argument("--model", default=None, help=f"checkpoint to start from (default {DEFAULT_MODEL})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.repeats < 2:
        ap.error("--repeats must be at least 2")
    if args.batch < 1:
        ap.error("--batch must be at least 1")
    budgets = [int(k) for k in args.budget.split(",") if k.strip()]
    model = str(Path(args.model or DEFAULT_MODEL).resolve())
    beside = Path(model).with_suffix("").with_name(Path(model).stem + ".base_features.npz")
    if args.model and beside.is_file() and not os.environ.get("LADEDA_BASE_FEATURES"):
        # the base rows that model was fitted on (a --hold-out model's lack the new source): learning
        # must not take the bundled ones, which include it
        os.environ["LADEDA_BASE_FEATURES"] = str(beside)
    tmp = Path(tempfile.mkdtemp(prefix="loop-bench-"))
    base_dir = Path(args.store) if args.store else tmp / "base"
    try:
        truth, _ = score_into(base_dir, args.data, model, quiet=args.json)
        runs = [run_once(base_dir, tmp / f"rep{r}", model, truth, budgets, args.order, args.batch, args.seed + r)
                for r in range(args.repeats)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results = []
    for i, k in enumerate(sorted(set(budgets))):
        rows = [run[i] for run in runs]
        results.append({"k": k, **{f: _mean([r[f] for r in rows]) for f in FIELDS}})
    out = {"n_images": len(truth), "order": args.order, "batch": args.batch, "repeats": args.repeats,
           "model": model, "results": results}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{len(truth)} images, order {args.order}, batch {args.batch}, {args.repeats} repeats")
        print(f"{'k':>5}{'AUC':>8}{'AP':>8}{'clear':>8}{'right':>8}{'R→fake':>8}{'adapt s':>9}")
        fmt = lambda v: f"{v:>8.3f}" if v is not None else f"{'—':>8}"  # noqa: E731
        for r in results:
            print(f"{r['k']:>5}{fmt(r['auc'])}{fmt(r['ap'])}{fmt(r['clear_share'])}{fmt(r['clear_accuracy'])}"
                  f"{fmt(r['reals_clearly_fake'])}{r['adapt_s']:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

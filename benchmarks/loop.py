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
"""
from __future__ import annotations

import argparse
import hashlib
import json
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

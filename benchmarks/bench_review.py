"""The review loop in a real browser: claim → evidence and label → next item's evidence.

Queues ``--items`` scored items (through the upload door, so their evidence is stored), starts
``streamlit run`` and drives Debian's Chromium with the keyboard only: N claims, A/F label. Half the
items are claimed one by one with auto-next off (``claim_to_evidence``), the other half are labelled
with auto-next on (``label_to_next_evidence``). "Evidence" means the item's verdict, image and details
are on screen with every image loaded. Prints medians (and with ``--json`` one JSON object):

    {"claim_to_evidence_ms_p50", "claim_to_evidence_ms_p95", "label_to_next_evidence_ms_p50"}

    python benchmarks/bench_review.py [--items 20] [--json] [--model M.pt] [--learning-from KEPT_STORE]

``--learning-from`` measures the same while the product's background learner adapts in the app's
own process: the scored store a ``benchmarks/loop.py --store`` run kept (same model) becomes the
app's store, ``--learning-labels`` of its items are labelled first (alternating real/fake: the
fit's cost, not its quality, is what loads the machine), and the app runs with
``LADEDA_LEARN_EVERY=1``, so a learn step starts at once and again after every label. The JSON
then adds ``claims_while_learning`` and ``claim_to_evidence_ms_p50_while_learning`` (claims that
started while the store's ``learn`` lease was held) and ``learn_steps`` (versions registered).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.paths import default_model_path  # noqa: E402
from dashboard import browser as B  # noqa: E402

MARK = '[class*="st-key-review-evidence-done-"]'
#: Checked inside the page on every animation frame (no round trip per check, which would load the
#: 2 cores it measures): the marker of an item other than ``previous``, every image loaded, script idle.
JS_MARK = """(previous) => { const m = document.querySelector('%s'); if (!m) return null;
  const c = Array.from(m.classList).find(x => x.startsWith('st-key-review-evidence-done-'));
  const imgs = Array.from(document.images).every(i => i.complete && i.naturalWidth > 0);
  const idle = document.querySelector('[data-testid="stApp"][data-test-script-state="notRunning"]');
  return (imgs && idle && c !== previous) ? c : null; }""" % MARK


def _queue(data_dir: Path, model: Path, n: int) -> None:
    from core.review.actions.submit import submit
    from core.review.store import ReviewStore
    from core.scoring.detector import Detector

    data_dir.mkdir(parents=True, exist_ok=True)
    store = ReviewStore(data_dir / "review.sqlite")
    det = Detector.load(model)
    for i in range(n):
        sub = submit(det, B.photo_png(640, 480, seed=900 + i), f"review-{i:03d}.png", store, "bench")
        if sub.queue_state != "queued":
            store.enqueue(sub.sha256, by="bench", reason="benchmark")
    store.close()


def _learning_store(kept: Path, data_dir: Path, n_labels: int):
    """The kept store as the app's store (database, images, features), ``n_labels`` items labelled."""
    import shutil

    from core.review.store import ReviewStore

    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(kept / "r.sqlite", data_dir / "review.sqlite")
    for sub in ("images", "artifacts"):
        if (kept / sub).is_dir():
            shutil.copytree(kept / sub, data_dir / sub)
    store = ReviewStore(data_dir / "review.sqlite", second_review_share=None)
    for i, row in enumerate(store.queue_items(n_labels, state="queued")):
        store.label(row["sha256"], "fake" if i % 2 else "real", "seed-reviewer")
    return store


def _wait_new(page, previous: str | None, timeout_s: float = 120.0) -> str:
    try:
        return page.wait_for_function(JS_MARK, arg=previous, polling="raf", timeout=timeout_s * 1e3).json_value()
    except Exception as exc:  # noqa: BLE001 - Playwright's timeout, said plainly
        raise TimeoutError("the next item's evidence did not appear") from exc


def _unfocus(page) -> None:
    """Keyboard shortcuts act only when no text field has the focus."""
    page.evaluate("() => document.activeElement && document.activeElement.blur()")


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=20, help="items queued (at least 4)")
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    ap.add_argument("--model", default=None, help="checkpoint (default: $LADEDA_MODEL or the bundled model)")
    ap.add_argument("--learning-from", default=None, metavar="KEPT_STORE",
                    help="measure while the background learner adapts (a store kept by benchmarks/loop.py --store)")
    ap.add_argument("--learning-labels", type=int, default=60, help="items of that store labelled first")
    args = ap.parse_args(argv)
    n = max(4, args.items)
    model = Path(args.model) if args.model else default_model_path()
    if B.find_chromium() is None:
        print("Chromium not found (apt-get install chromium)", file=sys.stderr)
        return 2
    log = (lambda *a: None) if args.json else print
    tmp = Path(tempfile.mkdtemp(prefix="bench-review-"))
    extra_env: dict[str, str] = {}
    learning = None
    if args.learning_from:
        learning = _learning_store(Path(args.learning_from), tmp / "data", args.learning_labels)
        extra_env = {"LADEDA_LEARN_EVERY": "1", "LADEDA_AUTO_ACTIVATE": "off"}
        log(f"{args.learning_labels} items of {args.learning_from} labelled; the app learns after every label")
    _queue(tmp / "data", model, n)
    log(f"{n} items queued")
    claim_ms: list[float] = []
    next_ms: list[float] = []
    during: list[float] = []
    with B.streamlit_server(tmp / "data", model, log_path=tmp / "streamlit.log", timeout_s=300,
                            extra_env=extra_env) as url, \
            B.chromium(viewport=(1280, 800)) as ctx:
        page = ctx.new_page()
        page.goto(url, timeout=300_000)
        B.wait_app_ready(page, 300_000)
        B.set_reviewer(page, "bench-reviewer")
        B.go_to(page, "Review")
        B.set_toggle(page, "review-auto-next", False)
        previous = None
        half = n // 2
        for _ in range(half):  # claim one by one
            _unfocus(page)
            busy = learning is not None and learning.jobs.running("learn") is not None
            t0 = time.perf_counter()
            page.keyboard.press("n")
            previous = _wait_new(page, previous)
            claim_ms.append((time.perf_counter() - t0) * 1e3)
            if busy and learning.jobs.running("learn") is not None:  # held before and after the claim
                during.append(claim_ms[-1])
            page.keyboard.press("a")
            page.get_by_role("button", name="Claim next").wait_for(timeout=60_000)
            B.wait_idle(page)
        B.set_toggle(page, "review-auto-next", True)
        _unfocus(page)
        page.keyboard.press("n")
        previous = _wait_new(page, previous)
        for i in range(n - half - 1):  # label, auto-next shows the next item
            t0 = time.perf_counter()
            page.keyboard.press("f" if i % 2 else "a")
            previous = _wait_new(page, previous)
            next_ms.append((time.perf_counter() - t0) * 1e3)
    out = {"claim_to_evidence_ms_p50": round(statistics.median(claim_ms), 1),
           "claim_to_evidence_ms_p95": round(_pct(claim_ms, 0.95), 1),
           "label_to_next_evidence_ms_p50": round(statistics.median(next_ms), 1)}
    if learning is not None:
        from core.model.registry import ModelRegistry

        out.update(claims_while_learning=len(during),
                   claim_to_evidence_ms_p50_while_learning=round(statistics.median(during), 1) if during else None,
                   learn_steps=len(ModelRegistry(tmp / "data" / "models", base=model).versions()))
        learning.close()
    print(json.dumps(out) if args.json else
          f"{len(claim_ms)} claims, {len(next_ms)} label→next · claim→evidence p50 "
          f"{out['claim_to_evidence_ms_p50']} ms, p95 {out['claim_to_evidence_ms_p95']} ms · "
          f"label→next evidence p50 {out['label_to_next_evidence_ms_p50']} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

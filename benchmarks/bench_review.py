"""The review loop in a real browser: claim → evidence and label → next item's evidence.

Queues ``--items`` scored items (through the upload door, so their evidence is stored), starts
``streamlit run`` and drives Debian's Chromium with the keyboard only: N claims, A/F label. Half the
items are claimed one by one with auto-next off (``claim_to_evidence``), the other half are labelled
with auto-next on (``label_to_next_evidence``). "Evidence" means the item's verdict, image and details
are on screen with every image loaded. Prints medians (and with ``--json`` one JSON object):

    {"claim_to_evidence_ms_p50", "claim_to_evidence_ms_p95", "label_to_next_evidence_ms_p50"}

    python benchmarks/bench_review.py [--items 20] [--json] [--model M.pt]
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
    args = ap.parse_args(argv)
    n = max(4, args.items)
    model = Path(args.model) if args.model else default_model_path()
    if B.find_chromium() is None:
        print("Chromium not found (apt-get install chromium)", file=sys.stderr)
        return 2
    log = (lambda *a: None) if args.json else print
    tmp = Path(tempfile.mkdtemp(prefix="bench-review-"))
    _queue(tmp / "data", model, n)
    log(f"{n} items queued")
    claim_ms: list[float] = []
    next_ms: list[float] = []
    with B.streamlit_server(tmp / "data", model, log_path=tmp / "streamlit.log", timeout_s=300) as url, \
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
            t0 = time.perf_counter()
            page.keyboard.press("n")
            previous = _wait_new(page, previous)
            claim_ms.append((time.perf_counter() - t0) * 1e3)
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
    print(json.dumps(out) if args.json else
          f"{len(claim_ms)} claims, {len(next_ms)} label→next · claim→evidence p50 "
          f"{out['claim_to_evidence_ms_p50']} ms, p95 {out['claim_to_evidence_ms_p95']} ms · "
          f"label→next evidence p50 {out['label_to_next_evidence_ms_p50']} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

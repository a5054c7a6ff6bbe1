"""Several analysts at once: N headless Chromium sessions upload images to one ``streamlit run``.

Every session opens the app, enters a reviewer name and uploads ``--uploads`` unseen images on
Inspect, all sessions at the same moment (one upload round at a time). For each upload it waits for
the verdict card; an error message, an exception box or no verdict within the timeout counts as an
error. Prints the figures (and with ``--json`` one JSON object):

    {"sessions": N, "uploads": per-session uploads, "errors": failed uploads,
     "verdict_s_p50": median upload → verdict seconds, "verdict_s_p95": 95th percentile}

    python benchmarks/bench_load.py --sessions 4 --uploads 2 [--json] [--model M.pt]

Zero errors is the acceptance; latencies under load are for the note. Portraits from the shared
corpus (``$LADEDA_SHARED_DIR``/corpus, read in place) are mixed in when present so the face
cascades run concurrently too.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.paths import default_model_path  # noqa: E402
from dashboard import browser as B  # noqa: E402

VERDICT = ".st-key-inspect-verdict, .st-key-inspect-provisional-verdict"
ERROR_TEXT = ("Something went wrong", "Traceback")


def _images(n: int, folder: Path) -> list[Path]:
    shared = Path(os.environ.get("LADEDA_SHARED_DIR", ROOT.parent / "shared")) / "corpus" / "test"
    faces = sorted(shared.glob("faces-*/*/*.jpg"))[:: 7] if shared.is_dir() else []
    out = []
    for i in range(n):
        if i % 2 and faces:
            out.append(faces[(i // 2) % len(faces)])
        else:
            p = folder / f"load-{i}.png"
            p.write_bytes(B.photo_png(640, 480, seed=500 + i))
            out.append(p)
    return out


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _state(page, name: str) -> str:
    """'verdict', 'error' or 'waiting' for the upload of ``name`` on this page."""
    body = page.locator("body").inner_text(timeout=10_000)
    if any(t in body for t in ERROR_TEXT) or page.locator('[data-testid="stException"]').count():
        return "error"
    if page.locator(VERDICT).filter(has_text=name).count():
        return "verdict"
    return "waiting"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=4, help="concurrent browser sessions")
    ap.add_argument("--uploads", type=int, default=2, help="uploads per session")
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    ap.add_argument("--model", default=None, help="checkpoint (default: $LADEDA_MODEL or the bundled model)")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds an upload may take before it is an error")
    args = ap.parse_args(argv)
    model = Path(args.model) if args.model else default_model_path()
    if B.find_chromium() is None:
        print("Chromium not found (apt-get install chromium)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    images = _images(args.sessions * args.uploads, tmp)
    latencies: list[float] = []
    errors = 0
    log = (lambda *a: None) if args.json else print
    with B.streamlit_server(tmp / "data", model, log_path=tmp / "streamlit.log", timeout_s=300) as url, \
            B.chromium(viewport=(1280, 800)) as ctx:
        pages = []
        for k in range(args.sessions):
            page = ctx.new_page()
            page.goto(url, timeout=300_000)
            B.wait_app_ready(page, 300_000)
            B.set_reviewer(page, f"analyst-{k}")
            pages.append(page)
        log(f"{args.sessions} sessions ready ({model.name})")
        for r in range(args.uploads):
            pending = {}
            for k, page in enumerate(pages):  # all sessions upload at (almost) the same moment
                path = images[k * args.uploads + r]
                B.upload(page, path)
                pending[k] = (path.name, time.perf_counter())
            while pending:
                for k in list(pending):
                    name, t0 = pending[k]
                    state = _state(pages[k], name)
                    if state == "verdict":
                        latencies.append(time.perf_counter() - t0)
                        del pending[k]
                    elif state == "error" or time.perf_counter() - t0 > args.timeout:
                        errors += 1
                        del pending[k]
                time.sleep(0.05)
            for page in pages:  # let every session finish its page before the next round
                B.wait_idle(page, int(args.timeout * 1000))
            log(f"round {r + 1}: {len(latencies)} verdicts, {errors} errors so far")
    out = {"sessions": args.sessions, "uploads": args.uploads, "errors": errors,
           "verdict_s_p50": round(statistics.median(latencies), 3) if latencies else None,
           "verdict_s_p95": round(_percentile(latencies, 0.95), 3) if latencies else None}
    print(json.dumps(out) if args.json else
          f"sessions {out['sessions']} · uploads/session {out['uploads']} · errors {out['errors']} · "
          f"verdict p50 {out['verdict_s_p50']} s · p95 {out['verdict_s_p95']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

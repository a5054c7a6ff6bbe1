"""Upload → rendered verdict in a real browser, with the heatmap or the GradCAM view selected.

Starts ``streamlit run dashboard/app.py`` on localhost (a throw-away data
directory), drives Debian's Chromium through Playwright, uploads freshly
generated photo-like PNGs on the Inspect page and prints the medians of:

* ``verdict``: from handing the file to the upload input until the verdict
  card for that file is on screen;
* ``complete``: until the page has rendered everything (the selected view, top patches,
  guardrails) and every image has loaded.

The verdict's critical path is decode plus one model pass; faces, quality and metadata
fill in after it (and may move the tier to review).

    python benchmarks/bench_browser.py                 # bundled model, 7 uploads per mode
    python benchmarks/bench_browser.py --model m.pt --runs 5 --size 1024x768
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.paths import default_model_path  # noqa: E402
from dashboard import browser as B  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint (default: $LADEDA_MODEL or the bundled model)")
    ap.add_argument("--runs", type=int, default=7, help="uploads per mode (after one warm-up upload)")
    ap.add_argument("--size", default="640x480", help="generated image size WxH")
    ap.add_argument("--screenshots", default=None, help="folder for a screenshot per mode")
    args = ap.parse_args(argv)
    model = Path(args.model) if args.model else default_model_path()
    if not model.is_file():
        print(f"model not found: {model}", file=sys.stderr)
        return 2
    if B.find_chromium() is None:
        print("Chromium not found (apt-get install chromium)", file=sys.stderr)
        return 2
    w, h = (int(v) for v in args.size.lower().split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-browser-"))
    results: dict[str, list[dict[str, float]]] = {}
    t_start = time.perf_counter()
    with B.streamlit_server(tmp / "data", model, log_path=tmp / "streamlit.log", timeout_s=180) as url, \
            B.chromium() as ctx:
        page = ctx.new_page()
        page.goto(url, timeout=300_000)
        B.wait_app_ready(page, 300_000)
        print(f"server + model ready in {time.perf_counter() - t_start:.1f} s ({model.name})")
        seed = 100
        for mode in ("heatmap", "gradcam"):
            runs = []
            for i in range(args.runs + 1):  # the first upload of each mode is a warm-up
                path = tmp / f"{mode}-{i}.png"
                path.write_bytes(B.photo_png(w, h, seed=seed))
                seed += 1
                t = B.time_upload_to_verdict(page, path, timeout_ms=120_000)
                if i == 0:
                    B.set_view(page, "inspect", "CLIP GradCAM" if mode == "gradcam" else "LaDeDa local traces")
                if i:
                    runs.append(t)
            results[mode] = runs
            if args.screenshots:
                Path(args.screenshots).mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(Path(args.screenshots) / f"bench-{mode}.png"), full_page=True)
    print(f"model {model} · image {w}x{h} PNG · {args.runs} uploads per mode (medians, seconds)")
    print(f"{'mode':<12} {'verdict':>8} {'complete':>9}   (min–max verdict)")
    for mode, runs in results.items():
        v = [r["verdict_s"] for r in runs]
        c = [r["complete_s"] for r in runs]
        print(f"{mode:<12} {statistics.median(v):8.3f} {statistics.median(c):9.3f}   ({min(v):.3f}–{max(v):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

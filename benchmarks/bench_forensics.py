"""Forensics benchmark: ``python benchmarks/bench_forensics.py [--model M] [--images N] [--repeats R]``.

On N corpus test images (default 3; generated photos when the corpus is absent)
prints the median wall time of one scoring (``analyse``), of the stability
probe (the original plus six variants), of the three forensic layers, and of
building the evidence report (analysis reused, probe stored), so the cost of
the stress test and the report can be compared with one verdict. Figures,
never assertions.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.paths import SHARED_DIR  # noqa: E402


def _images(n: int) -> list[bytes]:
    files = sorted((SHARED_DIR / "corpus" / "test").glob("*/*/*"))[:: 7][:n]
    if files:
        return [f.read_bytes() for f in files]
    import io

    import numpy as np
    from PIL import Image

    out = []
    for seed in range(n):
        rng = np.random.default_rng(seed)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), "RGB").save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="checkpoint (default: the bundled model or $LADEDA_MODEL)")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    from core.model.registry import weights_key
    from core.review.report import build_report
    from core.review.store import ReviewStore
    from core.scoring.analysis import analyse, record_analysis
    from core.scoring.detector import Detector
    from core.scoring.forensics import forensic_layers
    from core.scoring.probe import probe, record_probe

    det = Detector.load(args.model)
    rows = {"analyse": [], "probe": [], "forensic_layers": [], "report": []}
    with tempfile.TemporaryDirectory() as tmp:
        store = ReviewStore(Path(tmp) / "review.sqlite")
        for data in _images(args.images):
            analysis = analyse(det, data, name="bench")  # warm (first shapes trace)
            record_analysis(store, analysis, name="bench", uploader=None)
            rows["analyse"].append(_median_ms(lambda: analyse(det, data, name="bench"), args.repeats))
            holder = {}
            rows["probe"].append(_median_ms(lambda: holder.update(r=probe(det, analysis.decoded)), args.repeats))
            record_probe(store, holder["r"], model_key=weights_key(det.checkpoint))
            rows["forensic_layers"].append(_median_ms(lambda: forensic_layers(analysis.decoded, det.spec),
                                                      args.repeats))
            rows["report"].append(_median_ms(lambda: build_report(store, analysis.score.sha256, det,
                                                                  analysis=analysis), args.repeats))
        store.close()
    out = {k: round(statistics.median(v), 1) for k, v in rows.items()}
    print(json.dumps({"model": det.identity["label"], "preprocessing": det.spec.summary(), "images": args.images,
                      "median_ms": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Guardrail figures on the shared corpus.

``faces``: how many images of the corpus face sources get exactly one / at least
one / more than one face, and the detection latency (all splits).
``policy``: per source of a split, how often the guardrails move an image to
review, and how many real images called 'clearly fake' by the thresholds alone
the policy removes (the model's own tiers, or the policy's defaults).

python benchmarks/bench_guardrails.py faces
python benchmarks/bench_guardrails.py policy --model /tmp/tiny_wildrf.pt --split test [--jsonl out.jsonl]
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.scoring.guardrails import run_guardrails  # noqa: E402
from core.scoring.guardrails.faces import detect_faces  # noqa: E402
from core.imageio import decode_image  # noqa: E402
from core.paths import SHARED_DIR  # noqa: E402
from core.scoring.policy import decide  # noqa: E402

FACE_SOURCES = ("faces-ffhq-vs-stylegan2", "faces-experiment")


def _rows(corpus: Path) -> list[dict[str, str]]:
    with open(corpus / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def bench_faces(corpus: Path) -> int:
    counts: dict[str, list[int]] = defaultdict(list)
    times, passes = [], Counter()
    for r in _rows(corpus):
        if r["source"] not in FACE_SOURCES:
            continue
        image = decode_image(corpus / r["path"]).image
        t0 = time.perf_counter()
        faces = detect_faces(image)
        times.append((time.perf_counter() - t0) * 1e3)
        counts[r["source"]].append(len(faces))
        passes.update(f.pass_name for f in faces)
    print("| source | images | exactly one face | at least one | more than one | none |")
    print("|---|---|---|---|---|---|")
    for src, c in sorted(counts.items()):
        print(f"| {src} | {len(c)} | {sum(n == 1 for n in c)} | {sum(n >= 1 for n in c)} | "
              f"{sum(n > 1 for n in c)} | {sum(n == 0 for n in c)} |")
    print(f"\ndetection latency: median {statistics.median(times):.0f} ms, "
          f"p90 {sorted(times)[int(0.9 * (len(times) - 1))]:.0f} ms; found by pass: {dict(passes)}")
    return 0


def bench_policy(corpus: Path, model: str | None, split: str, jsonl: str | None) -> int:
    from core.scoring.detector import Detector

    det = Detector.load(model)
    tiers = det.checkpoint.tiers
    print(f"model {det.checkpoint.label}; tiers: {tiers or 'none in checkpoint: policy defaults'}")
    stats: dict[str, Counter] = defaultdict(Counter)
    out = open(jsonl, "w") if jsonl else None
    for r in _rows(corpus):
        if r["split"] != split:
            continue
        decoded = det.decode(corpus / r["path"])
        score = det.score(decoded, name=r["path"], top_k=1)
        report = run_guardrails(decoded, det, model_input_size=tuple(score.image["model_input"]))
        d = decide(score.probability, tiers, report)
        s = stats[r["source"]]
        real = r["label"] == "real"
        s["n"] += 1
        s["real"] += real
        s["faces"] += bool(report.faces)
        s["moved_to_review"] += d.tier == "review" and d.base_tier != "review"
        s["low_quality"] += report.quality.low_quality
        s[f"base_{d.base_tier}"] += 1
        s[f"final_{d.tier}"] += 1
        s["real_fake_by_thresholds"] += real and d.base_tier == "fake"
        s["real_fake_after_policy"] += real and d.tier == "fake"
        s["fake_fake_by_thresholds"] += (not real) and d.base_tier == "fake"
        s["fake_fake_after_policy"] += (not real) and d.tier == "fake"
        if out:
            out.write(json.dumps({"path": r["path"], "source": r["source"], "label": r["label"],
                                  "probability": score.probability, "decision": d.to_json(),
                                  "guardrails": report.to_json()}) + "\n")
    if out:
        out.close()
    cols = ["n", "real", "faces", "low_quality", "moved_to_review", "base_fake", "final_fake",
            "real_fake_by_thresholds", "real_fake_after_policy", "fake_fake_by_thresholds", "fake_fake_after_policy"]
    print("| source | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    total: Counter = Counter()
    for src in sorted(stats):
        print(f"| {src} | " + " | ".join(str(stats[src][c]) for c in cols) + " |")
        total.update(stats[src])
    print("| ALL | " + " | ".join(str(total[c]) for c in cols) + " |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["faces", "policy"])
    ap.add_argument("--corpus", default=str(SHARED_DIR / "corpus"))
    ap.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--jsonl", default=None, help="write one line per image (decision + guardrails)")
    args = ap.parse_args()
    corpus = Path(args.corpus)
    if not (corpus / "manifest.csv").exists():
        print(f"corpus not found at {corpus}", file=sys.stderr)
        return 2
    if args.what == "faces":
        return bench_faces(corpus)
    return bench_policy(corpus, args.model, args.split, args.jsonl)


if __name__ == "__main__":
    raise SystemExit(main())

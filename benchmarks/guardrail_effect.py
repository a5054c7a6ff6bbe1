"""Per source: how often the guardrails change the tier, and how many real images
wrongly called 'clearly fake' by the thresholds alone the policy removes.

python benchmarks/guardrail_effect.py --model data/models/ladeda9.pt --data ../shared/corpus/test
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.scoring.analysis import analyse  # noqa: E402
from core.training.datasets import list_images  # noqa: E402
from core.scoring.detector import Detector  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", required=True)
    args = ap.parse_args()
    det = Detector.load(args.model)
    stats: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for it in list_images(args.data):
        a = analyse(det, it.path)
        s = stats[it.source]
        s["n"] += 1
        s["to_review_by_guardrails"] += int(a.decision.tier == "review" and a.decision.base_tier != "review")
        s["faces_found"] += int(bool(a.guardrails.faces))
        if it.label == 0:
            s["real"] += 1
            s["real_clearly_fake_by_thresholds"] += int(a.decision.base_tier == "fake")
            s["real_clearly_fake_after_policy"] += int(a.decision.tier == "fake")
        for t in ("real", "review", "fake"):
            s[f"final_{t}"] += int(a.decision.tier == t)
    cols = ["n", "faces_found", "to_review_by_guardrails", "real", "real_clearly_fake_by_thresholds",
            "real_clearly_fake_after_policy", "final_real", "final_review", "final_fake"]
    print("| source | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    total = defaultdict(int)
    for src in sorted(stats):
        print(f"| {src} | " + " | ".join(str(stats[src][c]) for c in cols) + " |")
        for c in cols:
            total[c] += stats[src][c]
    print("| ALL | " + " | ".join(str(total[c]) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

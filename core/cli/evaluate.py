"""``evaluate``: per-source (and robustness) metrics of a model on a labelled folder, as a report."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="per-source metrics on a labelled folder; writes a report folder")
    p.add_argument("--model", help="checkpoint (default: the bundled model or $LADEDA_MODEL)")
    p.add_argument("--data", required=True, metavar="DIR", help="WildRF-layout folder (0_real/1_fake at any depth)")
    p.add_argument("--robustness", action="store_true",
                   help="also score after JPEG q95/75/50/30, downscale x0.5 and Gaussian blur sigma 1")
    p.add_argument("--report", required=True, metavar="OUT_DIR", help="folder for report.md, CSVs and charts")
    p.add_argument("--threshold", type=float, default=0.5, help="probability at or above which accuracy calls fake")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.scoring.detector import Detector
    from core.evaluation.evaluate import evaluate, write_report

    detector = Detector.load(args.model)
    result = evaluate(detector, args.data, robustness=args.robustness, progress=not args.no_progress,
                      threshold=args.threshold, batch_size=args.batch_size)
    paths = write_report(result, args.report)
    print(f"{result.model['label']} {result.model['calibration_version'] or 'uncalibrated'} on {args.data} (clean)")
    print(result.markdown_table("clean"))
    if result.failures:
        print(f"{len(result.failures)} unreadable image(s) skipped; see report.md")
    print(f"report: {paths['report.md']}")
    return 0

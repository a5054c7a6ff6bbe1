"""``calibrate``: fit a calibration and review tiers, write a new checkpoint.

Data is a labelled WildRF-layout folder (scored here with the model's own
preprocessing) or a CSV with ``logit,label`` columns (the review export). The
fit, its refusals and its out-of-sample figures come from
:mod:`core.review.actions.calibrate`, the same door the Calibration page uses.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: Kept literal so building the parser does not import scikit-learn (same as core.calibration.calibrators.METHODS).
METHODS = ("temperature", "platt", "isotonic")

_SHOWN = ("ece", "ece_mass", "brier", "nll", "auc", "ap", "eer", "accuracy", "real_accuracy", "fake_accuracy")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="fit calibration + review tiers on labelled data, write a new checkpoint")
    p.add_argument("--model", help="checkpoint to calibrate (default: the bundled model or $LADEDA_MODEL)")
    p.add_argument("--data", required=True, metavar="DIR_OR_CSV",
                   help="WildRF-layout folder (0_real/1_fake at any depth) or CSV with logit,label columns")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--target-fpr", type=float, default=0.05,
                   help="at most this share of real images called clearly fake (default 0.05)")
    p.add_argument("--target-fnr", type=float, default=0.20,
                   help="at most this share of fakes called clearly real (default 0.20)")
    p.add_argument("--real-below", type=float, help="set tiers by hand: clearly real below this probability")
    p.add_argument("--fake-at-or-above", type=float, help="set tiers by hand: clearly fake at or above this")
    p.add_argument("--out", required=True, help="new checkpoint to write")
    p.add_argument("--record-out", help="also write the calibration record as JSON here")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.calibration.calibrators import describe, save_record
    from core.calibration.tiers import describe as describe_tiers
    from core.errors import DetectorError
    from core.model.checkpoint import load_checkpoint
    from core.paths import default_model_path
    from core.review.actions import calibrate as door

    ckpt = load_checkpoint(Path(args.model) if args.model else default_model_path())
    data_path = Path(args.data)
    if data_path.is_file():
        data = door.data_from_csv(data_path, ckpt)
    elif data_path.is_dir():
        from core.scoring.detector import Detector

        data = door.data_from_folder(data_path, Detector(ckpt), batch_size=args.batch_size,
                                     progress=not args.no_progress)
    else:
        raise DetectorError(f"--data {data_path} is neither a folder nor a CSV file.")
    if (args.real_below is None) != (args.fake_at_or_above is None):
        raise DetectorError("Give both --real-below and --fake-at-or-above to set tiers by hand.")
    result = door.fit(data, args.method, ckpt, target_fpr=args.target_fpr, target_fnr=args.target_fnr,
                      real_below=args.real_below, fake_at_or_above=args.fake_at_or_above,
                      context={"data": str(data_path)})
    sha, dtype = door.write_checkpoint(result, ckpt, args.out)
    record, tiers = result.record, result.tiers
    if args.record_out:
        save_record(record, args.record_out)
    notes = list(result.notes)
    if result.activation_refusal:
        notes.append(result.activation_refusal)

    summary = {"out": str(args.out), "model_sha256": sha, "weights_dtype": dtype, "calibration_version": record["version"],
               "method": record["method"], "params": record["params"], "n": record["n"], "n_real": record["n_real"],
               "n_fake": record["n_fake"], "metrics_before": record["metrics_before"],
               "metrics_after": record["metrics_after"], "metrics_out_of_fold": record.get("metrics_out_of_fold"),
               "tiers": tiers, "notes": notes}
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"fitted {describe(record)}")
    print(f"data: {data_path} ({data.source}); before = {record['metrics_before']['calibration']}, "
          f"after = {record['version']}")
    print(f"{'metric':<15}{'before':>10}{'after':>10}   (in-sample: on the fitting data)")
    for key in _SHOWN:
        b, a = record["metrics_before"].get(key), record["metrics_after"].get(key)
        print(f"{key:<15}{_num(b):>10}{_num(a):>10}")
    oof = record.get("metrics_out_of_fold")
    if oof:
        print(f"out of sample ({oof['folds']}-fold): ECE {_num(oof['ece'])} · NLL {_num(oof['nll'])} · "
              f"AUC {_num(oof['auc'])} · FPR {_num(oof['fpr'])} · FNR {_num(oof['fnr'])} · "
              f"review share {_num(oof['review_share'])}")
    print(f"tiers: {describe_tiers(tiers)}")
    if tiers.get("targets", {}).get("fpr") is not None:
        print(f"targets: FPR <= {tiers['targets']['fpr']}, FNR <= {tiers['targets']['fnr']}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {args.out} (sha256 {sha[:16]}…, weights {dtype})")
    return 0


def _num(v) -> str:
    return "n/a" if v is None or v != v else f"{v:.4f}"

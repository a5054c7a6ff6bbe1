"""``calibrate``: fit a calibration and review tiers, write a new checkpoint.

Data is a labelled WildRF-layout folder (scored here with the model's own
preprocessing) or a CSV with ``logit,label`` columns (the review export).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

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


def _csv_checks(path: Path, ckpt) -> list[str]:
    """Refuse logits made with other preprocessing; warn about logits from an unknown model file."""
    from core.errors import CalibrationError

    fingerprints, models = set(), set()
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if str(row.get("label", "")).strip().lower() not in ("0", "1", "real", "fake"):
                continue
            if row.get("preprocess_fingerprint"):
                fingerprints.add(row["preprocess_fingerprint"].strip())
            if row.get("model_sha256"):
                models.add(row["model_sha256"].strip())
    own = ckpt.spec.fingerprint()
    foreign = sorted(fingerprints - {own})
    if foreign:
        raise CalibrationError(
            f"{path.name} has logits made with preprocessing {', '.join(foreign)}, but this model uses {own}; "
            "those logits do not describe this model. Export only this model's reviews."
        )
    known = {ckpt.sha256, ckpt.provenance.get("calibrated_from_sha256"), *ckpt.provenance.get("lineage_sha256", [])}
    unknown = sorted(models - known)
    if unknown:
        return [f"{path.name} has logits from model file(s) {', '.join(u[:12] for u in unknown)} not in this "
                "checkpoint's lineage; make sure they share its weights."]
    return []


def run(args: argparse.Namespace) -> int:
    import torch

    from core.calibration.calibrators import apply_record, describe, fit_calibration, save_record
    from core.model.checkpoint import load_checkpoint, now_iso
    from core.training.datasets import list_images, read_logit_csv
    from core.errors import DetectorError
    from core.paths import default_model_path
    from core.calibration.tiers import TARGET_ACCURACY, describe as describe_tiers, manual_tiers, tiers_from_targets

    model_path = Path(args.model) if args.model else default_model_path()
    ckpt = load_checkpoint(model_path)
    data = Path(args.data)
    notes: list[str] = []
    if data.is_file():
        notes += _csv_checks(data, ckpt)
        logits, labels = read_logit_csv(data)
        z, y = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
        kind = "csv"
    elif data.is_dir():
        from core.scoring.detector import Detector
        from core.evaluation.evaluate import score_images

        items = list_images(data)
        logit_map, failures = score_images(Detector(ckpt), items, batch_size=args.batch_size,
                                           progress=not args.no_progress, desc="scoring")
        keep = [i for i in range(len(items)) if (i, "clean") in logit_map]
        z = np.array([logit_map[(i, "clean")] for i in keep], dtype=np.float64)
        y = np.array([items[i].label for i in keep], dtype=np.int64)
        notes += [f"unreadable, skipped: {f} ({why})" for f, why in failures]
        kind = "folder"
    else:
        raise DetectorError(f"--data {data} is neither a folder nor a CSV file")
    if (args.real_below is None) != (args.fake_at_or_above is None):
        raise DetectorError("Give both --real-below and --fake-at-or-above to set tiers by hand")

    context = {"model_sha256": ckpt.sha256, "model": ckpt.label, "preprocess_fingerprint": ckpt.spec.fingerprint(),
               "data": str(data), "data_kind": kind}
    record = fit_calibration(z, y, args.method, baseline=ckpt.calibration, context=context)
    p_after = apply_record(record, z)
    if args.real_below is not None:
        tiers = manual_tiers(args.real_below, args.fake_at_or_above, p_after, y, calibration_version=record["version"])
    else:
        tiers = tiers_from_targets(p_after, y, args.target_fpr, args.target_fnr, calibration_version=record["version"])
    record["tiers"] = tiers
    acc = (tiers.get("achieved") or {}).get("accuracy_outside_review")
    if acc is not None and acc < TARGET_ACCURACY:
        notes.append(f"accuracy outside the review band is {acc:.3f}, below the {TARGET_ACCURACY:.0%} criterion")
    notes += record.get("warnings", [])

    dtype = "float16" if any(v.is_floating_point() and v.dtype == torch.float16
                             for v in ckpt.state_dict.values()) else "float32"
    lineage = [s for s in [*ckpt.provenance.get("lineage_sha256", []), ckpt.sha256] if s]
    provenance = {**ckpt.provenance, "calibrated_from_sha256": ckpt.sha256, "lineage_sha256": lineage,
                  "calibration_version": record["version"], "calibrated_at": now_iso()}
    new = ckpt.with_updates(calibration=record, tiers=tiers, provenance=provenance)
    sha = new.save(args.out, dtype=dtype)
    if args.record_out:
        save_record(record, args.record_out)

    summary = {"out": str(args.out), "model_sha256": sha, "weights_dtype": dtype, "calibration_version": record["version"],
               "method": record["method"], "params": record["params"], "n": record["n"], "n_real": record["n_real"],
               "n_fake": record["n_fake"], "metrics_before": record["metrics_before"],
               "metrics_after": record["metrics_after"], "tiers": tiers, "notes": notes}
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"fitted {describe(record)}")
    print(f"data: {data} ({kind}); before = {record['metrics_before']['calibration']}, after = {record['version']}")
    print(f"{'metric':<15}{'before':>10}{'after':>10}")
    for key in _SHOWN:
        b, a = record["metrics_before"].get(key), record["metrics_after"].get(key)
        print(f"{key:<15}{_num(b):>10}{_num(a):>10}")
    print(f"tiers: {describe_tiers(tiers)}")
    if tiers.get("targets", {}).get("fpr") is not None:
        print(f"targets: FPR <= {tiers['targets']['fpr']}, FNR <= {tiers['targets']['fnr']}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {args.out} (sha256 {sha[:16]}…, weights {dtype})")
    return 0


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"

"""``train``: train LaDeDa on WildRF-layout folders (train/, val/)."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a LaDeDa model on DIR/train with DIR/val for early stopping")
    p.add_argument("--data", required=True, help="folder with train/ and val/ in the WildRF layout")
    p.add_argument("--out", required=True, help="checkpoint to write (state for --resume goes to OUT.state)")
    p.add_argument("--arch", default="ladeda9", help="ladeda5|ladeda9|ladeda17|ladeda33|tiny")
    p.add_argument("--input-repr", default="NPR", help="raw|NPR|x_grad|y_grad|left_diag|right_diag")
    p.add_argument("--size", type=int, default=256, help="resize images to SIZExSIZE (the serving spec)")
    p.add_argument("--resize-mode", default="stretch", choices=["stretch", "shorter_side", "none"])
    p.add_argument("--max-side", type=int, default=None,
                   help="with --resize-mode none: downscale images whose longer side exceeds this")
    p.add_argument("--crop", type=int, default=64, help="random crop size for training batches")
    p.add_argument("--crop-align", type=int, default=1,
                   help="put crop corners on multiples of N pixels (8 keeps the JPEG grid and patch-stride phase)")
    p.add_argument("--patch-teacher", default=None,
                   help="a fit-teacher file: also regress its patch logits (MSE), a dense target that speeds learning")
    p.add_argument("--teacher-weight", type=float, default=1.0, help="weight of the patch-teacher MSE")
    p.add_argument("--val-crop", type=int, default=None,
                   help="validate on the central N×N region instead of whole images (cheap at native resolution)")
    p.add_argument("--batch-size", type=int, default=32)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, default=None)
    g.add_argument("--steps", type=int, default=None, help="total optimiser steps (instead of --epochs)")
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--jpeg-aug", type=float, default=0.0, help="probability of JPEG re-encoding augmentation")
    p.add_argument("--blur-aug", type=float, default=0.0, help="probability of Gaussian blur augmentation")
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--zero-init", action="store_true",
                   help="start residual blocks as identities and the head at 0 (faster start from scratch)")
    p.add_argument("--lr-patience", type=int, default=3)
    p.add_argument("--early-stop-patience", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--max-train-images", type=int, default=None, help="use a random subset (smoke tests)")
    p.add_argument("--resume", action="store_true", help="continue from OUT.state if it exists")
    p.add_argument("--no-bias-report", action="store_true", help="skip the bias report printed before training")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from core.training.train import TrainConfig, _state_path, train

    out = Path(args.out)
    state = _state_path(out)
    if state.exists() and not args.resume:
        state.unlink()  # a fresh run: never silently continue an old one
    if not args.no_bias_report:
        from core.training.bias import bias_report, format_report

        print(format_report(bias_report(Path(args.data) / "train")), flush=True)
    cfg = TrainConfig(
        data=args.data, out=args.out, arch=args.arch, input_repr=args.input_repr, size=args.size,
        resize_mode=args.resize_mode, max_side=args.max_side, crop=args.crop, crop_align=args.crop_align,
        val_crop=args.val_crop, patch_teacher=args.patch_teacher, teacher_weight=args.teacher_weight, batch_size=args.batch_size,
        epochs=args.epochs or 30, steps=args.steps, steps_per_epoch=args.steps_per_epoch, lr=args.lr,
        warmup_steps=args.warmup_steps, jpeg_aug=args.jpeg_aug, blur_aug=args.blur_aug, flip=not args.no_flip, zero_init=args.zero_init,
        lr_patience=args.lr_patience, early_stop_patience=args.early_stop_patience, seed=args.seed,
        device=args.device, threads=args.threads, max_train_images=args.max_train_images,
        progress=not args.no_progress,
    )
    ckpt = train(cfg)
    hist = ckpt.provenance.get("history", [])
    print(json.dumps({"out": str(ckpt.path), "model_sha256": ckpt.sha256, "best_val_ap": ckpt.provenance.get("best_val_ap"),
                      "epochs_run": len(hist), "train_seconds": ckpt.provenance.get("train_seconds")}))
    return 0

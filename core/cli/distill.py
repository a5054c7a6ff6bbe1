"""``distill``: train Tiny-LaDeDa on a LaDeDa teacher's patch logits."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distill", help="distil a LaDeDa teacher into Tiny-LaDeDa (MSE on patch logits)")
    p.add_argument("--teacher", required=True, help="LaDeDa checkpoint")
    p.add_argument("--data", required=True, help="folder with train/ (and val/) in the WildRF layout")
    p.add_argument("--out", required=True, help="Tiny checkpoint to write")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-train-images", type=int, default=None)
    p.add_argument("--crop", type=int, default=None,
                   help="distil on random N×N crops instead of whole images (native-resolution teachers)")
    p.add_argument("--crops-per-image", type=int, default=4)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.training.distill import DistillConfig, distill

    ckpt, history = distill(DistillConfig(teacher=args.teacher, data=args.data, out=args.out, epochs=args.epochs,
                                          batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                          progress=not args.no_progress, max_train_images=args.max_train_images,
                                          crop=args.crop, crops_per_image=args.crops_per_image))
    print(json.dumps({"out": str(ckpt.path), "model_sha256": ckpt.sha256,
                      "first_mse": history[0]["train_mse"], "last_mse": history[-1]["train_mse"],
                      "val_ap": history[-1].get("val_ap")}))
    return 0

"""``convert``: rewrite a checkpoint with float16 or float32 weights (everything else kept)."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="store a checkpoint's weights as float16 (half the size) or float32")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from core.model.checkpoint import load_checkpoint

    src = load_checkpoint(args.model)
    dst = src.with_updates(provenance={**src.provenance, "converted_from": src.sha256, "weights_dtype": args.dtype})
    dst.save(args.out, dtype=args.dtype)
    # Report how far the conversion moves the logits on a fixed random input.
    x = torch.randn(2, 3, *src.spec.size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a = src.build_model()(x).numpy()
        b = load_checkpoint(args.out).build_model()(x).numpy()
    print(json.dumps({"out": args.out, "model_sha256": dst.sha256, "dtype": args.dtype,
                      "max_abs_patch_logit_change": float(np.abs(a - b).max()),
                      "image_logit_change": float(np.abs(a.mean(axis=(1, 2, 3)) - b.mean(axis=(1, 2, 3))).max())}))
    return 0

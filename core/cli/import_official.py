"""``import-official``: wrap an official state dict with the official test preprocessing."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-official", help="wrap official LaDeDa9/Tiny weights into our checkpoint format")
    p.add_argument("--arch", required=True, choices=["ladeda9", "tiny"])
    p.add_argument("--weights", required=True, help="official .pth state dict")
    p.add_argument("--out", required=True, help="checkpoint to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.model.checkpoint import import_official

    ckpt = import_official(args.arch, args.weights, args.out)
    print(json.dumps({
        "out": str(ckpt.path),
        "model": ckpt.label,
        "model_sha256": ckpt.sha256,
        "preprocess_fingerprint": ckpt.spec.fingerprint(),
        "preprocess": ckpt.spec.summary(),
        "licence": ckpt.provenance.get("licence"),
    }))
    return 0

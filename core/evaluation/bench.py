"""Latency benchmark: ``python -m core.bench [--repeats N] [--image PATH]``.

Prints, for LaDeDa9 and Tiny-LaDeDa on this CPU, at the input size each
checkpoint's own preprocessing gives (256×256 for the official protocol, the
native size capped at 768 px for the bundled models), the median latency of
decode+preprocess, of the serving forward with the patch map, of the whole
``Detector.score`` call, and of the plain eager float32 forward the official
code runs, with the speed-up and the largest logit difference.
Then, for each precision path this CPU can serve (:mod:`core.model.precision`;
``--paths`` to force one), the serving forward at 768×576 for both models:
ms per image, megapixels per second, speed-up over fp32 in the same run, and
the image-logit change against fp32.
Figures, never assertions: run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.model.checkpoint import Checkpoint, load_checkpoint
from core.scoring.detector import Detector
from core.model.models import build_model
from core.paths import DEFAULT_MODEL, DEFAULT_TINY_MODEL
from core.model.preprocess import official_spec


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def _random_checkpoint(arch: str) -> Checkpoint:
    torch.manual_seed(0)
    representation = "right_diag" if arch == "tiny" else "NPR"
    model = build_model(arch, representation)
    for m in model.modules():  # non-trivial BN statistics, like a trained model
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return Checkpoint(arch={"name": "tiny", "channels": 8} if arch == "tiny" else {"name": "ladeda", "receptive_field": 9},
                      spec=official_spec(representation), state_dict=model.state_dict(), provenance={"source": "random"})


def _sample_jpeg() -> bytes:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(24, 32, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((1024, 768), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def bench_one(ckpt: Checkpoint, data: bytes, repeats: int) -> dict:
    torch.set_num_threads(torch.get_num_threads())
    det = Detector(ckpt, fast=True)
    eager = ckpt.build_model()
    x = det.prepare(data).tensor
    with torch.inference_mode():
        eager_map = eager(x)[0, 0].numpy()
    fast_map = det.patch_map(x)[0]

    def eager_forward():
        with torch.no_grad():
            eager(x)

    r = {
        "model": ckpt.label,
        "source": ckpt.provenance.get("source", "trained"),
        "input": list(x.shape[-2:]),
        "decode_preprocess_ms": _median_ms(lambda: det.prepare(data), repeats),
        "forward_patch_map_ms": _median_ms(lambda: det.patch_map(x), repeats),
        "whole_call_ms": _median_ms(lambda: det.score(data), repeats),
        "eager_fp32_forward_ms": _median_ms(eager_forward, repeats),
        "max_abs_patch_logit_diff": float(np.abs(eager_map - fast_map).max()),
        "image_logit_diff": float(abs(eager_map.mean() - fast_map.mean())),
    }
    r["speedup_vs_eager"] = r["eager_fp32_forward_ms"] / r["forward_patch_map_ms"]
    return r


PRECISION_HW = (576, 768)  #: the 768×576 input the precision table is measured at


def bench_precision(ckpt: Checkpoint, paths: list[str], repeats: int, data: bytes) -> list[dict]:
    """Serving forward per precision path on one 768×576 input made from ``data``."""
    from core.model.serving import ServingModel

    eager = ckpt.build_model()
    det = Detector(ckpt, fast=False)
    from PIL import Image as _Image

    img = _Image.open(io.BytesIO(data)).convert("RGB").resize(PRECISION_HW[::-1], _Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    x = det.prepare(buf.getvalue()).tensor
    x = x[..., : PRECISION_HW[0], : PRECISION_HW[1]]  # the spec may resize; the table is at 768×576
    if tuple(x.shape[-2:]) != PRECISION_HW:
        x = torch.nn.functional.interpolate(x, size=PRECISION_HW, mode="bilinear", align_corners=False)
    rows, base = [], None
    for path in paths:
        serving = ServingModel(eager, example_hw=PRECISION_HW, precision=path, warmup=2)
        logit = float(serving(x)[0, 0].double().mean())
        ms = _median_ms(lambda: serving(x), repeats)
        if path == "fp32":
            base = (ms, logit)
        rows.append({"model": ckpt.label, "precision": path, "input": list(PRECISION_HW), "ms_per_image": ms,
                     "megapixels_per_s": PRECISION_HW[0] * PRECISION_HW[1] / 1e6 / (ms / 1e3), "logit": logit})
    for r in rows:
        r["speedup_vs_fp32"] = base[0] / r["ms_per_image"] if base else None
        r["image_logit_change_vs_fp32"] = abs(r["logit"] - base[1]) if base else None
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--image", help="image to use (default: a generated 1024x768 JPEG)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--paths", help="precision paths to measure, comma-separated (default: those this CPU "
                                    "has the units for; fp32 is always measured first)")
    args = ap.parse_args(argv)
    from core.model.precision import IMPLEMENTED, available_paths, cpu_flags

    flags = cpu_flags()
    wanted = args.paths.split(",") if args.paths else available_paths(flags)
    paths = ["fp32"] + [p for p in dict.fromkeys(wanted) if p != "fp32" and p in IMPLEMENTED]
    data = Path(args.image).read_bytes() if args.image else _sample_jpeg()
    rows, prec = [], []
    for arch, bundled in (("ladeda9", DEFAULT_MODEL), ("tiny", DEFAULT_TINY_MODEL)):
        ckpt = load_checkpoint(bundled) if bundled.exists() else _random_checkpoint(arch)
        rows.append(bench_one(ckpt, data, args.repeats))
        prec += bench_precision(ckpt, paths, args.repeats, data)
    if args.json:
        print(json.dumps({"latency": rows, "precision": prec,
                          "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16",
                                                       "amx_int8"})}, indent=2))
        return 0
    print(f"threads={torch.get_num_threads()}  repeats={args.repeats}  (medians, ms)")
    head = f"{'model':12s} {'input':>9s} {'decode+prep':>11s} {'forward':>9s} {'whole':>9s} {'eager fp32':>10s} {'speed-up':>8s} {'max|dlogit|':>11s}"
    print(head)
    for r in rows:
        size = "x".join(str(v) for v in r["input"])
        print(f"{r['model']:12s} {size:>9s} {r['decode_preprocess_ms']:11.2f} {r['forward_patch_map_ms']:9.2f} "
              f"{r['whole_call_ms']:9.2f} {r['eager_fp32_forward_ms']:10.2f} {r['speedup_vs_eager']:7.2f}x "
              f"{r['max_abs_patch_logit_diff']:11.2e}")
    have = sorted(flags & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8"})
    print(f"\nprecision paths at {PRECISION_HW[1]}x{PRECISION_HW[0]} (CPU flags: {' '.join(have) or 'none'}; "
          f"measured: {', '.join(paths)})")
    print(f"{'model':12s} {'path':>5s} {'ms/image':>9s} {'MP/s':>7s} {'vs fp32':>8s} {'|dlogit|':>9s}")
    for r in prec:
        print(f"{r['model']:12s} {r['precision']:>5s} {r['ms_per_image']:9.1f} {r['megapixels_per_s']:7.3f} "
              f"{r['speedup_vs_fp32']:7.2f}x {r['image_logit_change_vs_fp32']:9.2e}")
    missing = [p for p in ("bf16", "int8") if p not in paths]
    if missing:
        print("not measured: " + "; ".join(
            f"{p} ({'no int8 path meets the accuracy contract' if p == 'int8' else 'this CPU has no amx_bf16/avx512_bf16; --paths bf16 forces it (emulated)'})"
            for p in missing))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

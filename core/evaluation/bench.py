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
the image-logit change against fp32, and for int8 the analyst contract's figures as last
measured by ``python -m core.bench --contract`` (stored in ``benchmarks/int8_contract.json``).

``--contract`` runs the int8 path's analyst contract (:func:`core.model.precision.analyst_contract_report`)
on every ``../shared/corpus/test`` and ``../shared/unseen/*/test`` image, prints the figures and stores them.
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
        kwargs = {}
        if path == "int8":
            from core.model.int8 import Int8Unavailable, calibration_file, load_calibration

            try:
                kwargs["int8_calibration"] = load_calibration(eager, calibration_file(ckpt.path) if ckpt.path else None)
            except Int8Unavailable as exc:
                rows.append({"model": ckpt.label, "precision": path, "unavailable": str(exc)})
                continue
        serving = ServingModel(eager, example_hw=PRECISION_HW, precision=path, warmup=2, **kwargs)
        logit = float(serving(x)[0, 0].double().mean())
        ms = _median_ms(lambda: serving(x), repeats)
        if path == "fp32":
            base = (ms, logit)
        rows.append({"model": ckpt.label, "precision": path, "input": list(PRECISION_HW), "ms_per_image": ms,
                     "megapixels_per_s": PRECISION_HW[0] * PRECISION_HW[1] / 1e6 / (ms / 1e3), "logit": logit})
    for r in rows:
        if "unavailable" in r:
            continue
        r["speedup_vs_fp32"] = base[0] / r["ms_per_image"] if base else None
        r["image_logit_change_vs_fp32"] = abs(r["logit"] - base[1]) if base else None
    return rows


CONTRACT_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "int8_contract.json"


def contract_items() -> list[tuple[Path, str]]:
    """Every labelled test image the int8 contract is measured on: corpus/test and unseen/*/test, in a fixed
    order that mixes the sources (sorted by a hash of the file name), so any prefix or 1-in-k subset
    covers them all."""
    import hashlib

    from core.paths import SHARED_DIR
    from core.training.datasets import list_images

    items = [(i.path, f"corpus/{i.source}") for i in list_images(SHARED_DIR / "corpus" / "test")]
    for src in sorted(p for p in (SHARED_DIR / "unseen").iterdir() if (p / "test").is_dir()):
        items += [(i.path, f"unseen/{src.name}") for i in list_images(src / "test")]
    return sorted(items, key=lambda it: hashlib.sha1(f"{it[1]}/{Path(it[0]).name}".encode()).hexdigest())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return "unknown"


def run_contract(model_path: Path, every: int = 1, out: Path | None = CONTRACT_FILE) -> dict:
    """The int8 analyst contract on the test images (``every``: a deterministic 1-in-k subset)."""
    import datetime

    from core.encoders.clip import load_encoder
    from core.model.precision import RELEVANT_FLAGS, analyst_contract_report, cpu_flags

    items = contract_items()[::every]
    ckpt = load_checkpoint(model_path)
    ref, cand = Detector(ckpt, precision="fp32"), Detector(ckpt, precision="int8")
    encoder = load_encoder()
    t0 = time.time()

    from core.paths import REPO_ROOT

    log = REPO_ROOT / "runtime" / "int8_contract.records.jsonl"  # per-image records (runtime/: not committed)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")

    def progress(i, n, rec):
        with log.open("a") as fh:  # per image as it comes, so an interrupted run still has its figures
            fh.write(json.dumps(rec) + "\n")
        print(f"  {i:4d}/{n} {time.time() - t0:7.0f}s  dp={rec['probability_change']:.4f} "
              f"tier {rec['tier']}->{rec['tier_other']}  rho={rec['spearman']:.3f}  {rec['file']}", flush=True)

    report = analyst_contract_report(items, ref, cand, encoder=encoder, guardrails=False, progress=progress)
    report.update(model=ckpt.label, model_sha256=ckpt.sha256, cpu=cpu_model(),
                  cpu_flags=sorted(cpu_flags() & (RELEVANT_FLAGS | {"avx2", "avx512f"})),
                  torch_threads=torch.get_num_threads(), subset=f"1 in {every}" if every > 1 else "all",
                  measured_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  command="python -m core.bench --contract" + (f" --every {every}" if every > 1 else ""))
    if out is not None:
        out.write_text(json.dumps({k: v for k, v in report.items() if k != "records"}, indent=1) + "\n")
    return report


def print_contract(r: dict) -> None:
    c = r["contract"]
    print(f"int8 analyst contract ({r['images']} images, {r.get('subset', 'all')}; {r.get('cpu', '?')}; "
          f"encoder {'on' if r.get('encoder') else 'off'}, guardrails {'on' if r.get('guardrails') else 'off'})")
    print(f"  fused probability change: max {r['max_abs_probability_change']:.4f} (≤ {c['max_abs_probability_change']}), "
          f"median {r['median_abs_probability_change']:.5f}")
    print(f"  tier unchanged: {r['tier_agreement']:.2%} (≥ {c['min_tier_agreement']:.0%}); "
          f"changed: {len(r['tier_changes'])}")
    print(f"  patch-map Spearman: median {r['median_spearman']:.4f} (≥ {c['min_median_spearman']}), "
          f"min {r['min_spearman']:.4f}")
    print(f"  LaDeDa logit change: max {r['max_abs_ladeda_logit_change']:.3f}, median {r['median_abs_ladeda_logit_change']:.3f}")
    print(f"  fp32 tiers: {r.get('tiers_fp32')}; OOD guard trips the same: {r.get('ood_trip_agreement')} "
          f"(max distance change {r.get('max_ood_distance_change')}); pooled features median relative change "
          f"{r.get('median_pooled_rel_change')}")
    print(f"  forward median ms: fp32 {r['median_forward_ms']:.0f}, int8 {r['median_forward_ms_other']:.0f}")
    print(f"  meets contract: {'yes' if r['meets_contract'] else 'NO'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--image", help="image to use (default: a generated 1024x768 JPEG)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--paths", help="precision paths to measure, comma-separated (default: those this CPU "
                                    "has the units for; fp32 is always measured first)")
    ap.add_argument("--contract", action="store_true", help="run the int8 analyst contract on corpus/test and "
                                                            "unseen/*/test and store it in benchmarks/int8_contract.json")
    ap.add_argument("--every", type=int, default=1, help="with --contract: a deterministic 1-in-k subset")
    args = ap.parse_args(argv)
    if args.contract:
        report = run_contract(DEFAULT_MODEL, every=args.every,
                              out=CONTRACT_FILE if args.every == 1 else CONTRACT_FILE.with_suffix(".subset.json"))
        print_contract(report)
        return 0 if report["meets_contract"] else 1
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
    contract = _stored_contract()
    print(f"{'model':12s} {'path':>5s} {'ms/image':>9s} {'MP/s':>7s} {'vs fp32':>8s} {'|dlogit|':>9s}  analyst contract")
    for r in prec:
        if "unavailable" in r:
            print(f"{r['model']:12s} {r['precision']:>5s}  not available: {r['unavailable']}")
            continue
        note = ""
        if r["precision"] == "int8" and r["model"] == contract.get("model"):
            note = (f"  max|dp| {contract['max_abs_probability_change']:.4f}, tier same {contract['tier_agreement']:.1%}, "
                    f"rho med {contract['median_spearman']:.3f} ({contract['images']} img, {contract.get('subset', 'all')}: "
                    f"{'meets' if contract['meets_contract'] else 'FAILS'}; {contract['file']})")
        elif r["precision"] == "int8":
            note = "  not measured: python -m core.bench --contract"
        print(f"{r['model']:12s} {r['precision']:>5s} {r['ms_per_image']:9.1f} {r['megapixels_per_s']:7.3f} "
              f"{r['speedup_vs_fp32']:7.2f}x {r['image_logit_change_vs_fp32']:9.2e}{note}")
    from core.model.precision import ENABLED

    print(f"chosen automatically on this CPU: {_auto_choice()} "
          f"(enabled paths: {', '.join(ENABLED)})")
    missing = [p for p in ("bf16", "int8") if p not in paths]
    if missing:
        print("not measured: " + "; ".join(
            f"{p} ({'this CPU has no avx512_vnni/amx_int8' if p == 'int8' else 'this CPU has no amx_bf16/avx512_bf16; --paths bf16 forces it (emulated)'})"
            for p in missing))
    return 0


def _auto_choice() -> str:
    from core.model.precision import choose_precision, cpu_flags

    return choose_precision(cpu_flags(), "auto")


def _stored_contract() -> dict:
    """The last full contract run (without per-image records), else the last subset run, else {}."""
    for path in (CONTRACT_FILE, CONTRACT_FILE.with_suffix(".subset.json")):
        try:
            return {**json.loads(path.read_text()), "file": f"benchmarks/{path.name}"}
        except (OSError, ValueError):
            continue
    return {}


if __name__ == "__main__":
    raise SystemExit(main())

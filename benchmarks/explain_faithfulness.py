"""Do the shipped maps point at what their part relies on? The deletion test.

    python benchmarks/explain_faithfulness.py --data DIR [--n 30] [--json] [--split test]
        [--layer blocks.11.ln_1[,blocks.8.ln_1,...]] [--parts clip_gradcam,ladeda_patch] [--record FILE]

For each image and each shipped map (CLIP GradCAM on the active CLIP head,
LaDeDa's patch map), the top 10 % of the image's area by that map is replaced
with a blurred copy (:mod:`core.scoring.faithfulness`), that part is re-scored
as it is served (CLIP: the ONNX encoder + head; LaDeDa: the detector), and
the drop of its logit toward the other class is compared with the mean drop
from 10 random masks of the same area. ``wins`` counts the images whose map
beats that mean. LaDeDa's map is ranked by the patch logit on the side
LaDeDa calls (most fake patches for a fake call, most real for a real one).

``DIR`` is searched recursively for images; when it has ``test`` folders only
the images under them are used (``../shared/unseen`` and a corpus both work;
``--split val`` takes the ``val`` folders instead), and ``--n`` of them are
sampled with a fixed seed. Tune ``--layer`` on *val*; report on *test*.
Several comma-separated layers are compared on the same images and random
masks (the JSON reports the first). ``--json`` prints
``{"n", "parts": {"clip_gradcam": {"wins", "mean_drop", "mean_random_drop"}, "ladeda_patch": {...}}}``;
``--record FILE`` also writes it, with the data folder and layer, for the
dashboard's captions (``data/models/explain_faithfulness.json``). Progress goes
to stderr. Figures are printed, never asserted in tests.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.scoring import faithfulness as F  # noqa: E402

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
PART_NAMES = ("clip_gradcam", "ladeda_patch")


def images_in(folder: Path, n: int | None, seed: int = 0, split: str = "test") -> list[Path]:
    """Images under ``folder`` (only those under a ``split`` folder when there are any), ``n`` sampled."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    tests = [p for p in files if split in p.relative_to(folder).parts[:-1]]
    files = tests or files
    if n is not None and n < len(files):
        pick = np.random.default_rng(seed).choice(len(files), size=n, replace=False)
        files = [files[i] for i in sorted(pick)]
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--n", type=int, default=None, help="images to sample (default: all)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--model", default=None, help="checkpoint (default: the served one)")
    ap.add_argument("--layer", default=None, help="CLIP GradCAM layer(s), comma-separated (default: the shipped one)")
    ap.add_argument("--split", default="test", help="the split folder to take when there is one (default: test)")
    ap.add_argument("--parts", default=",".join(PART_NAMES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--record", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(2)
    from core.encoders.clip import encoder_status, load_encoder
    from core.imageio import decode_image
    from core.scoring import clip_cam, explain
    from core.scoring.analysis import learned_parts
    from core.scoring.detector import Detector

    parts_wanted = [p for p in args.parts.split(",") if p]
    unknown = set(parts_wanted) - set(PART_NAMES)
    if unknown:
        ap.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    files = images_in(args.data, args.n, args.seed, args.split)
    if not files:
        ap.error(f"no images under {args.data}")
    det = Detector.load(args.model, fast=True)
    parts = learned_parts(det.checkpoint)
    enc = load_encoder()
    layers = (args.layer or clip_cam.DEFAULT_LAYER).split(",")
    layer = layers[0]
    if "clip_gradcam" in parts_wanted and (enc is None or parts.clip_head is None):
        print(f"CLIP GradCAM skipped: {encoder_status() or 'the model has no CLIP head'}", file=sys.stderr)
        parts_wanted.remove("clip_gradcam")
    rng = np.random.default_rng(args.seed)
    drops: dict[str, list[float]] = {p: [] for p in parts_wanted}
    by_layer: dict[str, list[float]] = {name: [] for name in layers}
    rand: dict[str, list[float]] = {p: [] for p in parts_wanted}

    def clip_z(image) -> float:
        return parts.clip_logit(enc.encode(image))

    def ladeda_z(decoded, image) -> float:
        return float(det.score(dataclasses.replace(decoded, image=image)).logit)

    t_start = time.perf_counter()
    for i, path in enumerate(files, 1):
        t0 = time.perf_counter()
        decoded = decode_image(path)
        image = decoded.image
        w, h = image.size
        blur = F.blurred(image)
        if "clip_gradcam" in parts_wanted:
            z0 = clip_z(image)
            for name in layers:
                cam = clip_cam.compute(enc, parts.clip_head, image, layer=name, target="fake" if z0 > 0 else "real")
                values, seen = clip_cam.cam_to_pixels(cam.grid, cam.crop_box, cam.image_size, (w, h))
                by_layer[name].append(F.drop(z0, clip_z(F.delete(image, blur, F.top_area_mask(values, seen)))))
            r = [F.drop(z0, clip_z(F.delete(image, blur, m))) for m in F.random_masks((h, w), seen, rng)]
            drops["clip_gradcam"].append(by_layer[layer][-1])
            rand["clip_gradcam"].append(float(np.mean(r)))
        if "ladeda_patch" in parts_wanted:
            s = det.score(decoded)
            z0 = float(s.logit)
            side = 1.0 if z0 > 0 else -1.0
            values, covered = explain.patch_map_to_pixels(side * s.patch_logits, det.geometry,
                                                          s.image["model_input"], (w, h), mode="nearest")
            d = F.drop(z0, ladeda_z(decoded, F.delete(image, blur, F.top_area_mask(values, covered))))
            r = [F.drop(z0, ladeda_z(decoded, F.delete(image, blur, m)))
                 for m in F.random_masks((h, w), covered, rng)]
            drops["ladeda_patch"].append(d)
            rand["ladeda_patch"].append(float(np.mean(r)))
        print(f"[{i}/{len(files)}] {path.name}: " + ", ".join(
            f"{p} {drops[p][-1]:+.3f} vs random {rand[p][-1]:+.3f}" for p in parts_wanted)
            + f" ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)

    result = {"n": len(files), "parts": {p: {
        "wins": int(sum(a > b for a, b in zip(drops[p], rand[p]))),
        "mean_drop": round(float(np.mean(drops[p])), 4),
        "mean_random_drop": round(float(np.mean(rand[p])), 4)} for p in parts_wanted}}
    if args.record is not None:
        rec = {**result, "data": f"images of {args.data.name}" + (" (test split)" if any(
            "test" in f.relative_to(args.data).parts[:-1] for f in files) else ""),
               "layer": layer, "area": F.AREA, "random_masks": F.RANDOM_MASKS, "seed": args.seed}
        args.record.write_text(json.dumps(rec, indent=1) + "\n")
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{len(files)} images from {args.data} ({time.perf_counter() - t_start:.0f} s); CLIP layer {layer}")
        if "clip_gradcam" in parts_wanted:
            for name in layers[1:]:
                wins = sum(a > b for a, b in zip(by_layer[name], rand["clip_gradcam"]))
                print(f"clip_gradcam at {name}: wins {wins}/{len(files)} · mean drop {np.mean(by_layer[name]):+.3f}")
        for p, r in result["parts"].items():
            print(f"{p:14s} wins {r['wins']}/{len(files)} ({r['wins'] / len(files):.0%}) · mean drop "
                  f"{r['mean_drop']:+.3f} · mean random drop {r['mean_random_drop']:+.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""LaDeDa's int8 serving graph: static quantisation with ONNX Runtime (VNNI/AMX kernels on x86).

What runs where (one pass, same outputs as :class:`core.model.serving.ServingModel`):

- the input representation (NPR residuals are small differences) runs in PyTorch, fp32;
- the folded network (BatchNorm folded, stem 1×1 merged, see :func:`core.model.serving.fold_for_inference`)
  is exported to ONNX with dynamic N×H×W and quantised statically in QDQ form: every conv of the residual
  body with per-channel symmetric int8 weights, activations per-tensor asymmetric uint8 (u8s8, the form
  AVX-512 VNNI and AMX run natively); the stem conv stays fp32, and so does the head (the 1×1 ``fc`` over
  the patch features and the mean that gives the pooled features);
- ONNX Runtime's CPU provider serves it; ``InferenceSession.run`` is thread-safe, so one model serves
  every dashboard session.

Activation ranges come from calibration on corpus *train* images (never the test images the contract
is measured on), computed once by ``python -m core.model.int8 calibrate`` and shipped as a small JSON
beside the checkpoint (``data/models/ladeda9.int8.json``), keyed by a hash of the network weights, so
building the graph needs neither ``../shared`` nor a download; a refit of the fusion or calibration
(which leaves the network weights alone) keeps it valid. The quantised graph is built at model load
(ONNX export + quantisation, seconds) and cached in memory by that hash.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn as nn

from core.errors import DetectorError

SCHEMA_VERSION = 1
#: The quantisation recipe; stored with the ranges so a file is only used with the recipe it was made for.
RECIPE = {
    "format": "QDQ",
    "op_types": ["Conv"],
    "per_channel": True,
    "weights": "int8 symmetric per output channel",
    "activations": "uint8 asymmetric per tensor",
    "calibration_method": "MinMax",
    "stem": "fp32",
    "head": "fp32",
    "opset": 17,
}


class Int8Unavailable(DetectorError):
    """No int8 graph can be built for this checkpoint (no calibration file, or one for other weights)."""

    code = "int8_unavailable"


def calibration_file(checkpoint_path: str | os.PathLike) -> Path:
    """Where a checkpoint's int8 calibration lives: ``<name>.int8.json`` beside it."""
    p = Path(checkpoint_path)
    return p.with_name(p.stem + ".int8.json")


def network_sha256(model: nn.Module) -> str:
    """Hash of the network weights (state dict, float32), independent of the checkpoint's learned parts."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


class _Body(nn.Module):
    """The folded network after the input representation: (patch logits, pooled features)."""

    def __init__(self, folded: nn.Module) -> None:
        super().__init__()
        self.net = folded

    def forward(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        y = torch.relu(n.conv2(r))
        y = n.layer4(n.layer3(n.layer2(n.layer1(y))))
        logits = torch.einsum("nchw,oc->nohw", y, n.fc.weight) + n.fc.bias.view(1, -1, 1, 1)
        return logits, y.mean(dim=(2, 3))


def _representation(folded: nn.Module, x: torch.Tensor) -> torch.Tensor:
    r = folded.representation(x)
    scale = float(getattr(folded, "input_scale", 1.0))
    return r * scale if scale != 1.0 else r


def export_onnx(model: nn.Module, path: str | os.PathLike, example_hw: tuple[int, int] = (64, 64)) -> nn.Module:
    """Export the folded fp32 network (after the representation) with dynamic N×H×W; returns the folded copy."""
    from core.model.models import LaDeDa
    from core.model.serving import fold_for_inference

    if not isinstance(model, LaDeDa):
        raise Int8Unavailable(f"the int8 path is built for LaDeDa, not {type(model).__name__}")
    folded = fold_for_inference(model)
    body = _Body(folded).eval()
    example = torch.randn(1, 3, *example_hw)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(body, (example,), str(path), input_names=["r"], output_names=["logits", "pooled"],
                          dynamic_axes={"r": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "hp", 3: "wp"},
                                        "pooled": {0: "n"}},
                          opset_version=RECIPE["opset"], dynamo=False)
    return folded


def _stem_node(onnx_path: Path) -> str:
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return next(n.name for n in graph.node if n.op_type == "Conv")


def _quantize(fp32_path: Path, out_path: Path, cache_path: Path, reader: Any = None) -> None:
    import logging

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT logs a "consider pre-processing" warning on every call
    try:
        quantize_static(str(fp32_path), str(out_path), reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=RECIPE["op_types"], per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=[_stem_node(fp32_path)], calibrate_method=CalibrationMethod.MinMax,
                        calibration_cache_path=str(cache_path),
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    finally:
        root.setLevel(level)


def calibrate(model: nn.Module, images: Iterable[torch.Tensor], out: str | os.PathLike,
              note: str = "") -> dict[str, Any]:
    """Compute activation ranges from model inputs (N×3×H×W, the spec's preprocessing) and write ``out``."""
    from onnxruntime.quantization import CalibrationDataReader

    folded_holder: dict[str, nn.Module] = {}
    tensors = list(images)

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(tensors)

        def get_next(self):
            x = next(self._it, None)
            if x is None:
                return None
            with torch.no_grad():
                return {"r": _representation(folded_holder["f"], x).numpy()}

    with tempfile.TemporaryDirectory(prefix="ladeda-int8-") as tmp:
        tmpd = Path(tmp)
        folded_holder["f"] = export_onnx(model, tmpd / "fp32.onnx")
        cache = tmpd / "ranges.json"
        _quantize(tmpd / "fp32.onnx", tmpd / "int8.onnx", cache, _Reader())
        ranges = json.loads(cache.read_text())
    record = {"schema_version": SCHEMA_VERSION, "network_sha256": network_sha256(model), "recipe": RECIPE,
              "torch": torch.__version__.split("+")[0], "calibration_images": len(tensors), "note": note,
              "ranges": ranges}
    Path(out).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def load_calibration(model: nn.Module, path: str | os.PathLike | None) -> dict[str, Any]:
    """The calibration record for this network at ``path``; :class:`Int8Unavailable` when absent or for other weights."""
    if path is None or not Path(path).is_file():
        raise Int8Unavailable(f"no int8 calibration file for this checkpoint (expected {path}); "
                              "run `python -m core.model.int8 calibrate`")
    rec = json.loads(Path(path).read_text())
    if rec.get("schema_version") != SCHEMA_VERSION or rec.get("recipe") != RECIPE:
        raise Int8Unavailable(f"{path} was made with another int8 recipe; recalibrate")
    if rec.get("network_sha256") != network_sha256(model):
        raise Int8Unavailable(f"{path} was calibrated for other network weights; recalibrate")
    return rec


_CACHE: dict[str, Any] = {}
_CACHE_LOCK = threading.Lock()


def build_session(model: nn.Module, calibration: dict[str, Any], threads: int | None = None):
    """(folded model, ORT session) for the int8 graph; built once per network hash and thread count."""
    import onnxruntime as ort

    threads = int(threads or torch.get_num_threads())
    key = f"{calibration['network_sha256']}:{threads}"
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        with tempfile.TemporaryDirectory(prefix="ladeda-int8-") as tmp:
            tmpd = Path(tmp)
            folded = export_onnx(model, tmpd / "fp32.onnx")
            cache = tmpd / "ranges.json"
            cache.write_text(json.dumps(calibration["ranges"]))
            names = set(_graph_tensor_names(tmpd / "fp32.onnx"))
            missing = [k for k in calibration["ranges"].get("data", {}) if k not in names]
            if missing:
                raise Int8Unavailable(f"the calibration names {len(missing)} tensors this export does not have "
                                      f"(e.g. {missing[0]}): another torch exporter; recalibrate")
            _quantize(tmpd / "fp32.onnx", tmpd / "int8.onnx", cache)
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = ort.InferenceSession((tmpd / "int8.onnx").read_bytes(), so,
                                           providers=["CPUExecutionProvider"])
        _CACHE[key] = (folded, session)
        return _CACHE[key]


def _graph_tensor_names(onnx_path: Path) -> list[str]:
    import onnx

    g = onnx.load(str(onnx_path), load_external_data=False).graph
    return [t for n in g.node for t in n.output] + [i.name for i in g.input]


class Int8Serving(nn.Module):
    """Callable like :class:`core.model.serving.ServingModel`: returns (N×1×H'×W' logits, N×C pooled), fp32."""

    def __init__(self, model: nn.Module, calibration: dict[str, Any], threads: int | None = None) -> None:
        super().__init__()
        self.folded, self.session = build_session(model, calibration, threads)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            r = _representation(self.folded, x.float())
        logits, pooled = self.session.run(None, {"r": np.ascontiguousarray(r.numpy())})
        return torch.from_numpy(logits), torch.from_numpy(pooled)


def _main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m core.model.int8", description="Calibrate LaDeDa's int8 graph.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("calibrate", help="activation ranges from corpus train images, written beside the model")
    c.add_argument("--model", default=None, help="checkpoint (default: the bundled LaDeDa9)")
    c.add_argument("--images", default=None, help="folder with 0_real/1_fake (default: ../shared/corpus/train)")
    c.add_argument("--count", type=int, default=16, help="images, evenly spaced over the sorted list")
    c.add_argument("--crop", type=int, default=384, help="top-left crop side (px) of each model input")
    args = ap.parse_args(argv)
    from core.model.checkpoint import load_checkpoint
    from core.paths import SHARED_DIR, default_model_path
    from core.scoring.detector import Detector
    from core.training.datasets import list_images

    path = Path(args.model) if args.model else default_model_path()
    det = Detector(load_checkpoint(path), fast=False)
    root = Path(args.images) if args.images else SHARED_DIR / "corpus" / "train"
    items = list_images(root)
    step = max(1, len(items) // args.count)
    chosen = items[::step][: args.count]
    xs = [det.prepare(i.path).tensor[..., : args.crop, : args.crop] for i in chosen]
    out = calibration_file(path)
    calibrate(det.model, xs, out, note=f"{len(xs)} images of {root.name} (every {step}th of {len(items)} sorted), "
                                       f"top-left {args.crop}px crop of the model input")
    print(f"wrote {out} ({out.stat().st_size} bytes) from {len(xs)} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())

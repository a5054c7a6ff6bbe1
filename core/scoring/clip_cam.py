"""GradCAM on the CLIP branch: where in the image the CLIP second opinion found its evidence.

Why: the served logit is almost entirely CLIP's (see the fusion weights), so
the map an analyst reads as "why it says fake" must be CLIP's, not LaDeDa's.
GradCAM (``pytorch-grad-cam``) runs on the differentiable tower
(:mod:`core.encoders.clip_torch`, weights read from the verified ONNX file)
and targets the active CLIP head's logit for the side CLIP itself calls
("fake" when its logit is ≥ 0, else "real"). The head reads the CLS token
after every block, so the target layer's patch tokens reach the logit through
every later block. The layer (:data:`DEFAULT_LAYER`) was chosen with
``benchmarks/explain_faithfulness.py`` on the unseen sources' *val* images;
the figures reported in the model card are on their *test* images.

The 14×14 token grid covers CLIP's input, which is the image resized
(shortest side 224) and centre-cropped: :func:`cam_to_pixels` puts it back
on the original image through :meth:`~core.encoders.clip.ClipSpec.crop_box`,
and what lies outside the crop is reported as not seen. A map is identified by
:func:`cam_key` (encoder key + head version + layer), so a stored map is never
shown for another head, and is stored per item under that key
(:func:`save` / :func:`load`): page reruns read it back, never recompute it.
"""
from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageDraw

from core.errors import InvalidArgumentError
from core.learning.features import CLIP_LAYERS_FEATURE

if TYPE_CHECKING:  # pragma: no cover
    from core.encoders.clip_torch import ClipTower, TowerOutput
    from core.learning.heads import LinearHead
    from core.review.store import ReviewStore

#: The GradCAM layer: the input of block 6's attention (``blocks.5.ln_1``, 0-based), whose patch tokens
#: reach the head through the CLS tokens of blocks 6-12. Chosen on 12 of the unseen sources' val images
#: with benchmarks/explain_faithfulness.py (same images and random masks for every candidate): wins
#: 12/12 here against 10/12 at blocks.1, 9/12 at blocks.3, 10/12 at blocks.8 and 10/12 at blocks.11.
DEFAULT_LAYER = "blocks.5.ln_1"
#: Bumped when the map's computation changes, so stored maps of the old kind are not shown.
CAM_VERSION = 1
KIND = "clip_cam"
#: Torch threads for the tower (the machine is shared with the serving path).
TORCH_THREADS = 2

_LOCK = threading.Lock()  # GradCAM hooks the shared tower: one map at a time


@dataclass
class ClipCam:
    """One image's CLIP GradCAM: a token grid over the area CLIP saw, and what it explains."""

    grid: np.ndarray  #: g×g float32 in [0, 1] (normalised per image, as GradCAM always is)
    crop_box: tuple[float, float, float, float]  #: the area CLIP saw, original pixels (x0, y0, x1, y1)
    image_size: tuple[int, int]  #: original (width, height)
    target: str  #: "fake" or "real": the side CLIP's head calls, whose logit was differentiated
    clip_logit: float  #: the head's logit on the torch tower (the served one comes from onnxruntime)
    layer: str
    key: str  #: :func:`cam_key` of the encoder, head and layer that made it
    elapsed_ms: float = 0.0

    def seen_share(self) -> float:
        """The share of the image's area inside CLIP's centre crop."""
        x0, y0, x1, y1 = self.crop_box
        return float((x1 - x0) * (y1 - y0) / max(1, self.image_size[0] * self.image_size[1]))

    def describe_area(self) -> str:
        x0, y0, x1, y1 = (int(round(v)) for v in self.crop_box)
        share = self.seen_share()
        if share >= 0.999:
            return "CLIP saw the whole image (resized to 224×224)"
        return (f"CLIP saw only the centre crop outlined, ({x0},{y0})–({x1},{y1}), {share:.0%} of the image "
                "(shortest side resized to 224, then cropped); the rest is not part of its verdict")

    def to_arrays_meta(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return ({"grid": np.asarray(self.grid, dtype=np.float16)},
                {"crop_box": list(self.crop_box), "image_size": list(self.image_size), "target": self.target,
                 "clip_logit": self.clip_logit, "layer": self.layer, "key": self.key, "version": CAM_VERSION,
                 "elapsed_ms": self.elapsed_ms})

    @classmethod
    def from_arrays_meta(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> "ClipCam | None":
        if int(meta.get("version", 0)) != CAM_VERSION or "grid" not in arrays:
            return None
        return cls(grid=np.asarray(arrays["grid"], dtype=np.float32),
                   crop_box=tuple(float(v) for v in meta["crop_box"]),
                   image_size=tuple(int(v) for v in meta["image_size"]), target=str(meta["target"]),
                   clip_logit=float(meta["clip_logit"]), layer=str(meta["layer"]), key=str(meta["key"]),
                   elapsed_ms=float(meta.get("elapsed_ms", 0.0)))


# ---------------------------------------------------------------------------
# identity
# ---------------------------------------------------------------------------
def head_version(head: "LinearHead") -> str:
    """A short digest of the head's weights, standardisation, bias and features: changes when adapt refits it."""
    h = hashlib.sha256(head.feature.encode())
    for arr in (head.weight, head.mean, head.scale):
        h.update(np.ascontiguousarray(np.asarray(arr, dtype=np.float64)).tobytes())
    h.update(repr(float(head.bias)).encode())
    return h.hexdigest()[:12]


def cam_key(encoder: Any, head: "LinearHead", layer: str = DEFAULT_LAYER) -> str:
    """The artifact key of a CLIP map: encoder (weights + preprocessing), head version, layer, method version."""
    return f"{encoder.key}|head-{head_version(head)}|{layer}|cam{CAM_VERSION}"


# ---------------------------------------------------------------------------
# the head on the tower, differentiable
# ---------------------------------------------------------------------------
def head_logit(head: "LinearHead", out: "TowerOutput") -> torch.Tensor:
    """The head's logit (N) on the tower's features, read as ``core.learning.parts.clip_input`` reads them."""
    if head.feature == CLIP_LAYERS_FEATURE:
        x = out.layers.reshape(out.layers.shape[0], -1)
    elif head.feature == "clip_cls":
        x = out.cls
    elif head.feature == "clip_embedding":
        x = out.embedding
    elif head.feature == "clip_both":
        x = torch.cat([out.embedding, out.cls], dim=-1)
    else:
        raise InvalidArgumentError(f"Unknown CLIP head feature {head.feature!r}")
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    return ((x - t(head.mean)) / t(head.scale)) @ t(head.weight) + float(head.bias)


class _HeadOnTower(nn.Module):
    """pytorch-grad-cam wants one module from pixels to scores: the tower, then the head (N×1)."""

    def __init__(self, tower: "ClipTower", head: "LinearHead") -> None:
        super().__init__()
        self.tower = tower
        self.head = head

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return head_logit(self.head, self.tower(pixels))[:, None]


class _Side:
    """GradCAM target: the logit for "fake", its negation for "real"; with ``None`` the side the output
    itself calls (so no extra forward pass is needed), recorded in :attr:`chosen`."""

    def __init__(self, target: str | None) -> None:
        self.chosen = target

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        value = output.reshape(-1)[0]
        if self.chosen is None:
            self.chosen = "fake" if float(value.detach()) >= 0 else "real"
        return value if self.chosen == "fake" else -value


def _layer(tower: nn.Module, name: str) -> nn.Module:
    module: Any = tower
    for part in name.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part, None)
        if module is None:
            raise InvalidArgumentError(f"The CLIP tower has no layer {name!r}")
    return module


def _tokens_to_grid(grid: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """pytorch-grad-cam's reshape transform for ViT tokens: drop CLS, N×(g·g)×D → N×D×g×g."""
    def transform(tokens: torch.Tensor) -> torch.Tensor:
        n, t, d = tokens.shape
        return tokens[:, 1:, :].reshape(n, grid[0], grid[1], d).permute(0, 3, 1, 2)
    return transform


def _cam_class():
    from pytorch_grad_cam import GradCAM

    class TokenGridGradCAM(GradCAM):
        """GradCAM left at the token grid (it is put on the image through the crop geometry, not stretched)."""

        def get_target_width_height(self, input_tensor: torch.Tensor):
            acts = self.activations_and_grads.activations
            if acts:
                h, w = acts[0].shape[-2:]
                return int(w), int(h)
            return super().get_target_width_height(input_tensor)

    return TokenGridGradCAM


def compute(encoder: Any, head: "LinearHead", image: Image.Image, *, layer: str = DEFAULT_LAYER,
            target: str | None = None) -> ClipCam:
    """GradCAM of the CLIP head's logit on ``image`` (the side CLIP calls unless ``target`` is given).

    Only the target layer and what follows it are differentiated: the tower runs without autograd up
    to the layer, whose output becomes a leaf, which gives the same map at a fraction of the cost.
    """
    from core.encoders.clip_torch import tower_for

    if target not in (None, "fake", "real"):
        raise InvalidArgumentError("target must be 'fake' or 'real'")
    t0 = time.perf_counter()
    tower = tower_for(encoder)
    pixels = torch.from_numpy(encoder.spec.to_tensor(image.convert("RGB")))
    module = _layer(tower, layer)
    wrapped = _HeadOnTower(tower, head)
    side = _Side(target)

    def _leaf(_module, _inp, out):
        torch.set_grad_enabled(True)  # upstream ran without autograd; differentiate from here on only
        return out.detach().requires_grad_(True)

    with _LOCK, torch.no_grad():
        threads = torch.get_num_threads()  # process-wide: capped while the map is made, then restored
        torch.set_num_threads(min(threads, TORCH_THREADS))
        handle = module.register_forward_hook(_leaf)  # before GradCAM's own hooks
        cam_obj = None
        try:
            cam_obj = _cam_class()(model=wrapped, target_layers=[module],
                                   reshape_transform=_tokens_to_grid(tower.grid))
            grid = cam_obj(input_tensor=pixels, targets=[side])[0]
            logit = float(cam_obj.outputs.detach().reshape(-1)[0])
        finally:
            if cam_obj is not None:
                cam_obj.activations_and_grads.release()
            handle.remove()
            torch.set_num_threads(threads)
    return ClipCam(grid=np.asarray(grid, dtype=np.float32), crop_box=encoder.spec.crop_box(*image.size),
                   image_size=(int(image.width), int(image.height)), target=side.chosen or "fake", clip_logit=logit,
                   layer=layer, key=cam_key(encoder, head, layer), elapsed_ms=(time.perf_counter() - t0) * 1e3)


# ---------------------------------------------------------------------------
# onto the image
# ---------------------------------------------------------------------------
def cam_to_pixels(grid: np.ndarray, crop_box: Sequence[float], image_size: Sequence[int],
                  out_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Spread a g×g token grid over an image shown at ``out_size`` = (width, height).

    ``crop_box`` is the area CLIP saw in original pixels (``image_size``); each token covers one
    cell of it, values are bilinear between token centres. Returns ``(values float32 H×W in [0, 1],
    seen bool H×W)``; outside the crop values are 0 and ``seen`` is False.
    """
    g = np.asarray(grid, dtype=np.float32)
    if g.ndim != 2 or min(g.shape) < 1:
        raise InvalidArgumentError(f"grid must be a non-empty 2-D array, got shape {g.shape}")
    w_out, h_out = int(out_size[0]), int(out_size[1])
    sx, sy = w_out / float(image_size[0]), h_out / float(image_size[1])
    x0, y0, x1, y1 = (float(crop_box[0]) * sx, float(crop_box[1]) * sy, float(crop_box[2]) * sx,
                      float(crop_box[3]) * sy)

    def axis(n_out: int, lo: float, hi: float, cells: int) -> tuple[np.ndarray, np.ndarray]:
        centres = np.arange(n_out, dtype=np.float64) + 0.5
        f = (centres - lo) / max(hi - lo, 1e-9) * cells - 0.5  # fractional token index
        return np.clip(f, 0, cells - 1), (centres >= lo) & (centres < hi)

    fy, in_y = axis(h_out, y0, y1, g.shape[0])
    fx, in_x = axis(w_out, x0, x1, g.shape[1])
    iy0, ix0 = np.floor(fy).astype(np.int64), np.floor(fx).astype(np.int64)
    iy1, ix1 = np.minimum(iy0 + 1, g.shape[0] - 1), np.minimum(ix0 + 1, g.shape[1] - 1)
    wy, wx = (fy - iy0)[:, None].astype(np.float32), (fx - ix0)[None, :].astype(np.float32)
    top = g[iy0[:, None], ix0[None, :]] * (1 - wx) + g[iy0[:, None], ix1[None, :]] * wx
    bottom = g[iy1[:, None], ix0[None, :]] * (1 - wx) + g[iy1[:, None], ix1[None, :]] * wx
    seen = in_y[:, None] & in_x[None, :]
    values = np.where(seen, top * (1 - wy) + bottom * wy, 0.0)
    return np.clip(values, 0.0, 1.0).astype(np.float32), seen


def cam_overlay(image: Image.Image, cam: ClipCam, *, opacity: float = 0.5, max_side: int | None = 1024) -> Image.Image:
    """The display-sized image with CLIP's GradCAM over the area it saw, that area outlined, the rest dimmed."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    from core.scoring.explain import fit_display

    base = fit_display(image, max_side)
    values, seen = cam_to_pixels(cam.grid, cam.crop_box, cam.image_size, base.size)
    rgb = np.asarray(base, dtype=np.float32) / 255.0
    over = show_cam_on_image(rgb, values, use_rgb=True, image_weight=1.0 - float(opacity))
    dimmed = (np.asarray(base, dtype=np.float32) * 0.45).astype(np.uint8)
    out = Image.fromarray(np.where(seen[..., None], over, dimmed), "RGB")
    sx, sy = base.width / cam.image_size[0], base.height / cam.image_size[1]
    x0, y0, x1, y1 = cam.crop_box
    box = [x0 * sx, y0 * sy, max(x0 * sx, x1 * sx - 1), max(y0 * sy, y1 * sy - 1)]
    draw = ImageDraw.Draw(out)
    lw = max(2, round(max(base.size) / 300))
    draw.rectangle(box, outline=(0, 0, 0), width=lw + 2)
    draw.rectangle(box, outline=(255, 255, 255), width=lw)
    return out


# ---------------------------------------------------------------------------
# stored once per item
# ---------------------------------------------------------------------------
def save(store: "ReviewStore", sha256: str, cam: ClipCam) -> None:
    arrays, meta = cam.to_arrays_meta()
    store.artifacts.put(sha256, cam.key, KIND, arrays, meta)


def load(store: "ReviewStore", sha256: str, key: str) -> ClipCam | None:
    """The stored map of this item for exactly this encoder, head and layer, or None."""
    got = store.artifacts.get(sha256, key, KIND)
    if got is None:
        return None
    cam = ClipCam.from_arrays_meta(*got)
    return cam if cam is not None and cam.key == key else None

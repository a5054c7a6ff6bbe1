"""Explanations for one scored image: the patch-logit heatmap, GradCAM and
enlarged crops of the most-fake patches. No Streamlit here.

The heatmap *is* the model's reasoning: LaDeDa's image logit is the mean of
its patch logits, so colouring each patch by its logit explains the score
exactly. The colour scale is fixed in logit units, symmetric around 0 and
clipped at ``±limit`` (:data:`DEFAULT_LOGIT_LIMIT` unless the caller picks
another fixed value), so a given colour means the same logit on every image —
never a per-image min-max stretch. Blue is "real" (negative logit), red is
"fake" (positive), near-white is undecided.

GradCAM comes from ``pytorch_grad_cam`` on the eager network
(``detector.model``). The network returns a patch map N×1×H'×W'; a small
wrapper turns it into the image logit (the mean), and the target is that logit
for the "fake" class or its negation for "real". The default target layer is
the last feature block (``layer4[-1]`` for LaDeDa, ``layer1`` for Tiny). Note:
because the head is linear and the image logit is a mean, the gradient at that
layer is the same at every position (``fc.weight / (H'·W')``), so GradCAM there
equals ``ReLU(patch_logit − fc.bias)`` up to scale for "fake" — it agrees with
the heatmap by construction and shows only the side of the predicted class,
normalised per image as GradCAM always is. Earlier layers (``layer3``,
``layer2``) can be named for a coarser, non-trivial view. Because it adds
nothing to the patch map, the screens no longer offer it: they show the patch
map as "LaDeDa local traces" and, for the part that decides the fused verdict,
CLIP's GradCAM (:mod:`core.scoring.clip_cam`).

All functions take and return PIL images / numpy arrays.
"""
from __future__ import annotations

import functools
import math
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageDraw, ImageFont

from core.model.models import LaDeDa, PatchGeometry, TinyLaDeDa
from core.errors import InvalidArgumentError

#: Patch logits are coloured on the fixed scale [-DEFAULT_LOGIT_LIMIT, +DEFAULT_LOGIT_LIMIT]
#: (values beyond are clipped). ±2 logits ≈ probability 0.12 / 0.88 for one patch. Chosen for the
#: bundled LaDeDa9, which keeps 98% of its patch logits within ±1.3 on the corpus test split, so
#: the scale shows structure without saturating; models with larger patch logits (the official
#: Tiny reaches ±100) need one of the wider fixed ranges below.
DEFAULT_LOGIT_LIMIT = 2.0
#: Fixed alternatives a UI may offer (each is still the same on every image).
LOGIT_LIMIT_CHOICES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
#: Default heatmap opacity.
DEFAULT_OPACITY = 0.55
#: Longest side of the images produced for display (the original is never changed).
DEFAULT_MAX_SIDE = 1024

# ColorBrewer RdBu (reversed): blue = real (negative), light = 0, red = fake (positive).
_DIVERGING_STOPS = np.array([
    [5, 48, 97], [33, 102, 172], [67, 147, 195], [146, 197, 222], [209, 229, 240],
    [247, 247, 247],
    [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43], [103, 0, 31],
], dtype=np.float64)

_GRADCAM_LOCK = threading.Lock()  # hooks on a shared model: one GradCAM at a time

Box = tuple[int, int, int, int]


# ---------------------------------------------------------------------------
# colour scale
# ---------------------------------------------------------------------------
def diverging_colours(values: np.ndarray, limit: float = DEFAULT_LOGIT_LIMIT) -> np.ndarray:
    """Logits → RGB uint8 on the fixed symmetric scale ``[-limit, +limit]`` (clipped)."""
    if not limit > 0:
        raise InvalidArgumentError("limit must be positive")
    v = np.asarray(values, dtype=np.float64)
    t = (np.clip(np.nan_to_num(v, nan=0.0), -limit, limit) + limit) / (2 * limit)  # 0..1
    pos = t * (len(_DIVERGING_STOPS) - 1)
    lo = np.floor(pos).astype(np.int64).clip(0, len(_DIVERGING_STOPS) - 2)
    frac = (pos - lo)[..., None]
    rgb = _DIVERGING_STOPS[lo] * (1 - frac) + _DIVERGING_STOPS[lo + 1] * frac
    return np.round(rgb).astype(np.uint8)


def _font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # very old Pillow
        return ImageFont.load_default()


def colour_legend(limit: float = DEFAULT_LOGIT_LIMIT, width: int = 360, height: int = 52) -> Image.Image:
    """A colour bar with its logit ticks: what each heatmap colour means."""
    bar_h = max(8, height // 2 - 4)
    img = Image.new("RGB", (width, height), (255, 255, 255))
    margin = 14
    xs = np.linspace(-limit, limit, width - 2 * margin)
    bar = np.repeat(diverging_colours(xs, limit)[None, :, :], bar_h, axis=0)
    img.paste(Image.fromarray(bar, "RGB"), (margin, 2))
    draw = ImageDraw.Draw(img)
    draw.rectangle([margin - 1, 1, width - margin, 2 + bar_h], outline=(120, 120, 120))
    font = _font(11)
    ticks = [(-limit, f"<= -{limit:g}  real"), (0.0, "0"), (limit, f">= +{limit:g}  fake")]
    for value, text in ticks:
        x = margin + (value + limit) / (2 * limit) * (width - 2 * margin - 1)
        draw.line([x, 2 + bar_h, x, 6 + bar_h], fill=(60, 60, 60))
        tw = draw.textlength(text, font=font)
        tx = min(max(0, x - tw / 2), width - tw)
        draw.text((tx, 8 + bar_h), text, fill=(40, 40, 40), font=font)
    return img


# ---------------------------------------------------------------------------
# geometry: patch grid → image pixels
# ---------------------------------------------------------------------------
def fit_display(image: Image.Image, max_side: int | None = DEFAULT_MAX_SIDE) -> Image.Image:
    """A copy no larger than ``max_side`` on its longer side (aspect kept)."""
    img = image.convert("RGB")
    if max_side and max(img.size) > max_side:
        scale = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.LANCZOS)
    return img


def _axis_index(n_out: int, n_in: int, n_patches: int, geometry: PatchGeometry, mode: str):
    """Per output pixel along one axis: patch index (or fractional index) and coverage."""
    centres_in = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out)  # model-input coords
    f = (centres_in - geometry.offset - geometry.size / 2.0) / geometry.stride
    covered = (centres_in >= geometry.offset) & (
        centres_in < geometry.offset + (n_patches - 1) * geometry.stride + geometry.size)
    f = np.clip(f, 0, n_patches - 1)
    if mode == "nearest":
        return np.floor(f + 0.5).astype(np.int64), covered
    return f, covered


def patch_map_to_pixels(patch_logits: np.ndarray, geometry: PatchGeometry, input_hw: Sequence[int],
                        out_size: Sequence[int], mode: str = "nearest") -> tuple[np.ndarray, np.ndarray]:
    """Spread an H'×W' patch map over an image of ``out_size`` = (width, height).

    ``input_hw`` is the model-input size the map was computed on; the image is
    assumed to be that input rescaled (stretch or aspect-keeping resize, no
    crop), which is what every :class:`~core.model.preprocess.PreprocessSpec` does.
    Each pixel takes the logit of the patch whose centre is nearest (``nearest``:
    blocks of one stride, honest about the model's resolution) or a bilinear
    blend of the neighbouring patch centres (``bilinear``). Returns
    ``(values float32 H×W, covered bool H×W)``; pixels that no patch sees
    (the bottom/right margin left by the stride) are ``covered == False``.
    """
    if mode not in ("nearest", "bilinear"):
        raise InvalidArgumentError("mode must be 'nearest' or 'bilinear'")
    pm = _patch_map(patch_logits)
    h_in, w_in = int(input_hw[0]), int(input_hw[1])
    w_out, h_out = int(out_size[0]), int(out_size[1])
    if mode == "nearest":
        ry, rx, covered = _nearest_cells(pm.shape, geometry, (h_in, w_in), (w_out, h_out))
        return pm[ry[:, None], rx[None, :]], covered.copy()
    ry, cov_y = _axis_index(h_out, h_in, pm.shape[0], geometry, mode)
    rx, cov_x = _axis_index(w_out, w_in, pm.shape[1], geometry, mode)
    y0 = np.floor(ry).astype(np.int64)
    x0 = np.floor(rx).astype(np.int64)
    y1 = np.minimum(y0 + 1, pm.shape[0] - 1)
    x1 = np.minimum(x0 + 1, pm.shape[1] - 1)
    wy = (ry - y0)[:, None].astype(np.float32)
    wx = (rx - x0)[None, :].astype(np.float32)
    top = pm[y0[:, None], x0[None, :]] * (1 - wx) + pm[y0[:, None], x1[None, :]] * wx
    bottom = pm[y1[:, None], x0[None, :]] * (1 - wx) + pm[y1[:, None], x1[None, :]] * wx
    values = top * (1 - wy) + bottom * wy
    covered = cov_y[:, None] & cov_x[None, :]
    return values.astype(np.float32), covered


def _patch_map(patch_logits: np.ndarray) -> np.ndarray:
    pm = np.asarray(patch_logits, dtype=np.float32)
    if pm.ndim != 2 or min(pm.shape) < 1:
        raise InvalidArgumentError(f"patch_logits must be a non-empty H'×W' array, got shape {pm.shape}")
    return pm


def _blend(base: Image.Image, colours: np.ndarray, alpha: np.ndarray) -> Image.Image:
    """``base·(1-α) + colours·α`` per pixel (the bilinear heatmap), in 8-bit fixed point: within one
    level of the float blend and exact at α = 0 and 1."""
    arr = np.asarray(base, dtype=np.uint8).astype(np.uint16)
    a = np.rint(np.clip(alpha, 0.0, 1.0) * 256.0).astype(np.uint16)[..., None]
    out = (arr * (256 - a) + colours.astype(np.uint16) * a + 128) >> 8
    return Image.fromarray(out.astype(np.uint8), "RGB")


def heatmap_overlay(image: Image.Image, patch_logits: np.ndarray, geometry: PatchGeometry,
                    input_hw: Sequence[int], *, limit: float = DEFAULT_LOGIT_LIMIT,
                    opacity: float = DEFAULT_OPACITY, mode: str = "nearest",
                    max_side: int | None = DEFAULT_MAX_SIDE) -> Image.Image:
    """The (display-sized) image with every patch tinted by its logit on the fixed scale.

    ``opacity`` in [0, 1] is the weight of the colour; uncovered margins stay untinted.
    """
    if not 0.0 <= opacity <= 1.0:
        raise InvalidArgumentError("opacity must be within [0, 1]")
    base = fit_display(image, max_side)
    if mode == "nearest":  # colour the small map once, then spread the colours by a cached pixel→patch index
        pm = _patch_map(patch_logits)
        ry, rx, covered = _nearest_cells(pm.shape, geometry, (int(input_hw[0]), int(input_hw[1])), base.size)
        colours = diverging_colours(pm, limit)[ry[:, None], rx[None, :]]
        tinted = Image.blend(base, Image.fromarray(colours, "RGB"), float(opacity))
        if not covered.all():  # the margin no patch sees stays untinted
            tinted.paste(base, mask=Image.fromarray(np.where(covered, 0, 255).astype(np.uint8), "L"))
        return tinted
    values, covered = patch_map_to_pixels(patch_logits, geometry, input_hw, base.size, mode)
    return _blend(base, diverging_colours(values, limit), covered * float(opacity))


@functools.lru_cache(maxsize=64)
def _nearest_cells(shape: tuple[int, int], geometry: PatchGeometry, input_hw: tuple[int, int],
                   out_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per display row and column, the nearest patch (as :func:`patch_map_to_pixels`), and the covered
    mask: the same for every image of one size, so a page redraw only gathers colours."""
    ry, cov_y = _axis_index(int(out_size[1]), input_hw[0], shape[0], geometry, "nearest")
    rx, cov_x = _axis_index(int(out_size[0]), input_hw[1], shape[1], geometry, "nearest")
    for a in (ry, rx):
        a.setflags(write=False)
    covered = cov_y[:, None] & cov_x[None, :]
    covered.setflags(write=False)
    return ry, rx, covered


def heatmap_for_score(image: Image.Image, score: Any, geometry: PatchGeometry, **kwargs: Any) -> Image.Image:
    """:func:`heatmap_overlay` for a :class:`~core.scoring.detector.ScoreResult` (uses its model-input size)."""
    input_hw = score.image.get("model_input") or list(score.patch_logits.shape)
    return heatmap_overlay(image, score.patch_logits, geometry, input_hw, **kwargs)


# ---------------------------------------------------------------------------
# GradCAM
# ---------------------------------------------------------------------------
class ImageLogitModel(nn.Module):
    """Wraps a patch-map network so it returns the image logit (N×1): the mean of the map."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(dim=(2, 3))


class LogitTarget:
    """GradCAM target: the image logit for "fake", its negation for "real".

    ``"auto"`` picks the side the model predicts from the output itself (so no
    extra forward pass is needed) and records it in :attr:`chosen`.
    """

    def __init__(self, target: str = "auto") -> None:
        if target not in ("fake", "real", "auto"):
            raise InvalidArgumentError("target must be 'fake', 'real' or 'auto'")
        self.target = target
        self.chosen: str | None = None if target == "auto" else target

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        value = model_output.reshape(-1)[0]
        if self.chosen is None:
            self.chosen = "fake" if float(value.detach()) >= 0 else "real"
        return value if self.chosen == "fake" else -value


def target_layer(model: nn.Module, name: str | None = None) -> tuple[str, nn.Module]:
    """The GradCAM layer: ``name`` (dotted, e.g. ``"layer3"``) or the last feature block."""
    if name:
        module: Any = model
        for part in name.split("."):
            module = module[int(part)] if part.lstrip("-").isdigit() else getattr(module, part, None)
            if module is None:
                raise InvalidArgumentError(f"The model has no layer {name!r}")
        return name, module
    if isinstance(model, LaDeDa):
        return f"layer4.{len(model.layer4) - 1}", model.layer4[-1]
    if isinstance(model, TinyLaDeDa):
        return "layer1", model.layer1
    for attr in ("layer4", "layer3", "layer1"):
        if hasattr(model, attr):
            return attr, getattr(model, attr)
    raise InvalidArgumentError("Cannot pick a GradCAM layer for this model; name one.")


@dataclass
class GradCamResult:
    cam: np.ndarray  #: H×W float32 in [0, 1], at the size of ``overlay``
    overlay: Image.Image  #: display-sized image with the CAM on top
    target: str  #: "fake" or "real"
    layer: str
    image_logit: float  #: the wrapped model's output (should equal the score's logit)
    elapsed_ms: float


def _make_cam_class():
    from pytorch_grad_cam import GradCAM

    class PatchGridGradCAM(GradCAM):
        """GradCAM that leaves the map at the layer's own grid (we map it with the patch geometry)."""

        def get_target_width_height(self, input_tensor: torch.Tensor):
            acts = self.activations_and_grads.activations
            if acts and getattr(self, "keep_grid", False):
                h, w = acts[0].shape[-2:]
                return int(w), int(h)
            return super().get_target_width_height(input_tensor)

    return PatchGridGradCAM


def gradcam(model: nn.Module, tensor: torch.Tensor, image: Image.Image, *, target: str | None = None,
            layer: str | None = None, opacity: float = 0.5,
            max_side: int | None = DEFAULT_MAX_SIDE) -> GradCamResult:
    """GradCAM of the image logit (``target`` "fake"/"real"; default: the predicted side).

    ``model`` is the eager patch-map network (``detector.model``), ``tensor`` its
    1×3×H×W input (``detector.prepare(decoded).tensor``) and ``image`` the
    original picture the result is drawn on. Only the target layer and what
    follows it are differentiated (the network runs without autograd up to the
    layer, whose output becomes a leaf), which gives the same GradCAM at a
    fraction of the cost of a full backward pass.
    """
    import cv2
    from pytorch_grad_cam.utils.image import show_cam_on_image

    t0 = time.perf_counter()
    geometry: PatchGeometry | None = getattr(model, "patch_geometry", None)
    layer_name, layer_module = target_layer(model, layer)
    wrapped = ImageLogitModel(model)
    goal = LogitTarget(target or "auto")
    shapes: dict[str, tuple[int, ...]] = {}

    def _leaf(_module, _inp, out):
        # Upstream ran without autograd; differentiate from here on only.
        shapes["layer"] = tuple(out.shape)
        torch.set_grad_enabled(True)
        return out.detach().requires_grad_(True)

    def _patch_map(_module, _inp, out):
        shapes["map"] = tuple(out.shape)

    with _GRADCAM_LOCK, torch.no_grad():  # _leaf re-enables grad at the target layer
        handles = [layer_module.register_forward_hook(_leaf),  # before GradCAM's own hooks
                   model.register_forward_hook(_patch_map)]
        cam_obj = None
        try:
            cam_obj = _make_cam_class()(model=wrapped, target_layers=[layer_module])
            cam_obj.keep_grid = True
            grid = cam_obj(input_tensor=tensor.detach().float(), targets=[goal])[0]
            image_logit = float(cam_obj.outputs.detach().reshape(-1)[0])
        finally:
            if cam_obj is not None:
                cam_obj.activations_and_grads.release()
            for h in handles:
                h.remove()
            wrapped.zero_grad(set_to_none=True)
    base = fit_display(image, max_side)
    input_hw = tuple(int(s) for s in tensor.shape[-2:])
    if geometry is not None and shapes.get("layer", ())[-2:] == shapes.get("map", ())[-2:]:
        # the layer's grid is the patch grid: place it with the model's patch geometry
        cam, covered = patch_map_to_pixels(grid, geometry, input_hw, base.size, mode="bilinear")
        cam = np.where(covered, cam, 0.0).astype(np.float32)
    else:
        cam = cv2.resize(grid.astype(np.float32), base.size, interpolation=cv2.INTER_LINEAR)
    cam = np.clip(cam, 0.0, 1.0).astype(np.float32)
    rgb = np.asarray(base, dtype=np.float32) / 255.0
    overlay = show_cam_on_image(rgb, cam, use_rgb=True, image_weight=1.0 - float(opacity))
    return GradCamResult(cam=cam, overlay=Image.fromarray(overlay, "RGB"), target=goal.chosen or "fake",
                         layer=layer_name, image_logit=image_logit,
                         elapsed_ms=(time.perf_counter() - t0) * 1e3)


_FOLDED: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()


def gradcam_network(model: nn.Module) -> nn.Module:
    """The network GradCAM runs on: an exact BN-folded, channels-last copy of ``model``
    (same layers and outputs, ~1.6x faster on CPU), made once per model."""
    with _GRADCAM_LOCK:
        folded = _FOLDED.get(model)
        if folded is None:
            from core.model.serving import fold_for_inference

            folded = fold_for_inference(model).to(memory_format=torch.channels_last)
            for p in folded.parameters():
                p.requires_grad_(False)  # only the target layer's output is differentiated
            _FOLDED[model] = folded
        return folded


def warm_up(model: nn.Module, size: int = 64) -> None:
    """Import pytorch-grad-cam (and its matplotlib/OpenCV dependencies), fold the network and run
    one small GradCAM, so the first real request does not pay for it."""
    net = gradcam_network(model)
    x = torch.zeros(1, 3, size, size).contiguous(memory_format=torch.channels_last)
    gradcam(net, x, Image.new("RGB", (size, size)), target="fake", max_side=size)


def gradcam_for_detector(detector: Any, decoded: Any, *, prepared: Any = None, **kwargs: Any) -> GradCamResult:
    """:func:`gradcam` for a :class:`~core.scoring.detector.Detector` and a decoded image
    (on :func:`gradcam_network` of ``detector.model``). ``prepared`` is the model input the scoring
    already made (``detector.prepare(decoded)``): passing it avoids preprocessing the image again."""
    model_input = prepared if prepared is not None else detector.prepare(decoded)
    tensor = model_input.tensor.contiguous(memory_format=torch.channels_last)
    return gradcam(gradcam_network(detector.model), tensor, decoded.image, **kwargs)


def default_layer_is_patch_grid(model: nn.Module) -> bool:
    """True when GradCAM at the default layer is a function of the patch map (LaDeDa: ``layer4[-1]``
    feeds the linear head directly, see the module docstring)."""
    return isinstance(model, LaDeDa)


def gradcam_grid_from_patch_map(patch_logits: np.ndarray, head_bias: float, target: str) -> np.ndarray:
    """GradCAM at LaDeDa's default layer, from the patch map alone (no model pass).

    The head is linear and the image logit is a mean, so the channel weights are ``±fc.weight/(H'W')``
    and the CAM is ``ReLU(±(patch_logit − fc.bias))``; scaled to [0, 1] exactly as pytorch-grad-cam
    does (minus the minimum, over the maximum).
    """
    if target not in ("fake", "real"):
        raise ValueError("target must be 'fake' or 'real'")
    sign = 1.0 if target == "fake" else -1.0
    cam = np.maximum(sign * (np.asarray(patch_logits, dtype=np.float32) - np.float32(head_bias)), 0.0)
    cam = cam - cam.min()
    return (cam / (1e-7 + cam.max())).astype(np.float32)


def cam_overlay(image: Image.Image, grid: np.ndarray, geometry: PatchGeometry, input_hw: Sequence[int], *,
                opacity: float = 0.5, max_side: int | None = DEFAULT_MAX_SIDE) -> Image.Image:
    """A CAM grid (patch resolution, [0, 1]) drawn over the display-sized image as :func:`gradcam` draws it."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    base = fit_display(image, max_side)
    cam, covered = patch_map_to_pixels(grid, geometry, input_hw, base.size, mode="bilinear")
    cam = np.clip(np.where(covered, cam, 0.0), 0.0, 1.0).astype(np.float32)
    rgb = np.asarray(base, dtype=np.float32) / 255.0
    return Image.fromarray(show_cam_on_image(rgb, cam, use_rgb=True, image_weight=1.0 - float(opacity)), "RGB")


def coarsen(patch_logits: np.ndarray, block: int = 4) -> np.ndarray:
    """The patch map with every patch replaced by the mean of its ``block``×``block`` block.

    Why: at 80–95 patches per side the full-resolution heatmap reads as speckle. Each block keeps
    its patches' sum, so the mean of the coarse map is still the image logit (blocks at the
    bottom/right edge are smaller and average only the patches they hold).
    """
    if block < 1:
        raise ValueError("block must be at least 1")
    pm = np.asarray(patch_logits, dtype=np.float64)
    h, w = pm.shape
    out = np.empty_like(pm)
    for y in range(0, h, block):
        for x in range(0, w, block):
            out[y:y + block, x:x + block] = pm[y:y + block, x:x + block].mean()
    return out.astype(np.float32)


def draw_numbered(image: Image.Image, boxes: Sequence[Box], *, source_size: Sequence[int],
                  max_side: int | None = DEFAULT_MAX_SIDE,
                  colour: tuple[int, int, int] = (255, 214, 0)) -> Image.Image:
    """Outline and number boxes given in ``source_size`` (width, height) pixels on a display copy of
    ``image``. A dark halo keeps the marks readable on any background; each mark is at least 14 px,
    so a 9-pixel patch is visible on a large photo."""
    base = fit_display(image, max_side)
    sx, sy = base.width / float(source_size[0]), base.height / float(source_size[1])
    draw = ImageDraw.Draw(base)
    font = _font(max(12, round(max(base.size) / 55)))
    for rank, (x0, y0, x1, y1) in enumerate(boxes, start=1):
        cx, cy = (x0 + x1) / 2 * sx, (y0 + y1) / 2 * sy
        half = max(7.0, (x1 - x0) * sx / 2, (y1 - y0) * sy / 2)
        rect = [cx - half, cy - half, cx + half, cy + half]
        draw.rectangle(rect, outline=(0, 0, 0), width=4)
        draw.rectangle(rect, outline=colour, width=2)
        text = str(rank)
        tw = draw.textlength(text, font=font)
        th = getattr(font, "size", 11)
        tx, ty = rect[2] + 2, rect[1] - th - 2
        if tx + tw + 4 > base.width:
            tx = rect[0] - tw - 6
        ty = max(0, ty)
        draw.rectangle([tx, ty, tx + tw + 4, ty + th + 3], fill=(0, 0, 0))
        draw.text((tx + 2, ty), text, fill=colour, font=font)
    return base


# ---------------------------------------------------------------------------
# boxes and crops
# ---------------------------------------------------------------------------
@dataclass
class LabelledBox:
    box: Box  #: (x0, y0, x1, y1) in original-image pixels, x1/y1 exclusive
    label: str = ""
    colour: tuple[int, int, int] = (255, 196, 0)


def draw_boxes(image: Image.Image, boxes: Sequence[LabelledBox], *,
               max_side: int | None = DEFAULT_MAX_SIDE, width: int | None = None) -> Image.Image:
    """A display-sized copy of ``image`` with labelled rectangles (boxes given in original pixels)."""
    base = fit_display(image, max_side)
    sx, sy = base.width / image.width, base.height / image.height
    draw = ImageDraw.Draw(base)
    lw = width or max(2, round(max(base.size) / 300))
    font = _font(max(11, round(max(base.size) / 60)))
    for item in boxes:
        x0, y0, x1, y1 = item.box
        rect = [x0 * sx, y0 * sy, max(x0 * sx, x1 * sx - 1), max(y0 * sy, y1 * sy - 1)]
        draw.rectangle(rect, outline=item.colour, width=lw)
        if item.label:
            tw = draw.textlength(item.label, font=font)
            th = font.size if hasattr(font, "size") else 11
            ty = rect[1] - th - 4 if rect[1] - th - 4 >= 0 else rect[3] + 2
            draw.rectangle([rect[0], ty, rect[0] + tw + 6, ty + th + 4], fill=item.colour)
            draw.text((rect[0] + 3, ty + 1), item.label, fill=(0, 0, 0), font=font)
    return base


@dataclass
class PatchCrop:
    image: Image.Image  #: the enlarged crop (patch outlined)
    box: Box  #: the patch, original pixels
    context_box: Box  #: the cropped region, original pixels
    logit: float
    rank: int


def top_patch_crops(image: Image.Image, hits: Sequence[Any], *, size: int = 192, context: float = 1.0,
                    outline: tuple[int, int, int] = (214, 39, 40)) -> list[PatchCrop]:
    """Enlarged crops around the most-fake patches (``PatchHit``-like: ``.box``, ``.logit``).

    ``context`` adds that many patch widths of surroundings on each side; the
    crop is scaled up with nearest-neighbour so pixel-level traces stay visible.
    """
    crops: list[PatchCrop] = []
    img = image.convert("RGB")
    for rank, hit in enumerate(hits, start=1):
        x0, y0, x1, y1 = (int(v) for v in hit.box)
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = min(img.width, max(x1, x0 + 1)), min(img.height, max(y1, y0 + 1))
        pad_x = int(math.ceil((x1 - x0) * context))
        pad_y = int(math.ceil((y1 - y0) * context))
        cx0, cy0 = max(0, x0 - pad_x), max(0, y0 - pad_y)
        cx1, cy1 = min(img.width, x1 + pad_x), min(img.height, y1 + pad_y)
        crop = img.crop((cx0, cy0, cx1, cy1))
        scale = size / max(crop.size)
        big = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))),
                          Image.Resampling.NEAREST)
        draw = ImageDraw.Draw(big)
        rx0, ry0 = (x0 - cx0) * scale, (y0 - cy0) * scale
        draw.rectangle([rx0, ry0, max(rx0, (x1 - cx0) * scale - 1), max(ry0, (y1 - cy0) * scale - 1)],
                       outline=outline, width=max(1, round(size / 96)))
        crops.append(PatchCrop(image=big, box=(x0, y0, x1, y1), context_box=(cx0, cy0, cx1, cy1),
                               logit=float(hit.logit), rank=rank))
    return crops

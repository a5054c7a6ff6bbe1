"""A differentiable PyTorch copy of the frozen CLIP image tower, read from the verified ONNX file.

Why: onnxruntime gives no gradients, and GradCAM on the CLIP branch needs
them. Rather than ship a second set of weights, the tower is rebuilt here
from the very file the served encoder runs: its INT8 matrices are
dequantised (``(q − zero_point) · scale``, per output channel) to float32 and
the float tensors (patch embedding, class and position embeddings, layer
norms, biases) are copied as they are. The file quantises activations
dynamically (``DynamicQuantizeLinear`` before every ``MatMulInteger``): the
tower does the same in its forward pass (:func:`fake_quant`, per tensor,
uint8, round half to even, as the ONNX operator is specified) and passes
gradients straight through it. Without that the drift over 12 blocks reached
cosine 0.94 between final CLS tokens; with it the tower is close to the
served encoder, not bit-equal (float summation order differs):
``tests/test_clip_torch.py`` holds it to cosine ≥ 0.999 between final CLS
tokens and median |Δ CLIP head logit| ≤ 0.05 on corpus images (figures in
the model card).

The graph is the Hugging Face ``CLIPVisionModelWithProjection`` export
(pre-LN ViT, quick-GELU, no conv bias, projection without bias). Width,
depth, head count and patch size are read from the file, so another export
of that family (e.g. ViT-L/14) builds through the same code. The module is
stateless apart from its frozen weights: share one per file between threads
(GradCAM's hooks are the caller's to serialise).
"""
from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.encoders.clip import EncoderError

_LAYER_RE = re.compile(r"/vision_model/encoder/layers\.(\d+)/(self_attn|mlp)/(\w+)/MatMul_quant$")


@dataclass
class TowerOutput:
    """What the tower gives for a batch: the same views :class:`~core.encoders.clip.ClipFeatures` holds."""

    embedding: torch.Tensor  #: N×P projected embedding, unit norm (as the served encoder returns it)
    cls: torch.Tensor  #: N×D final CLS token (residual stream after the last block, before post-LN)
    layers: torch.Tensor  #: N×L×D CLS token after every block (``layers[:, -1]`` is ``cls``)


def fake_quant(x: torch.Tensor) -> torch.Tensor:
    """``DynamicQuantizeLinear`` then dequantise, over the whole tensor (the file runs at batch size 1),
    with a straight-through gradient: the forward value is the quantised one, the gradient is the identity."""
    with torch.no_grad():
        lo, hi = torch.clamp(x.min(), max=0.0), torch.clamp(x.max(), min=0.0)
        scale = torch.clamp((hi - lo) / 255.0, min=torch.finfo(torch.float32).tiny)
        zero = torch.clamp(torch.round(-lo / scale), 0, 255)
        deq = (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale
    return x + (deq - x).detach()


class QLinear(nn.Linear):
    """A dequantised INT8 matrix fed, as in the file, with a dynamically quantised input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(fake_quant(x), self.weight, self.bias)


class Block(nn.Module):
    """One pre-LN residual attention block (``ln_1`` → attention, ``ln_2`` → quick-GELU MLP)."""

    def __init__(self, width: int, heads: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.q_proj, self.k_proj, self.v_proj = (QLinear(width, width) for _ in range(3))
        self.out_proj = QLinear(width, width)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.fc1 = QLinear(width, 4 * width)
        self.fc2 = QLinear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        h = fake_quant(self.ln_1(x))  # one quantisation shared by q, k and v, as in the file
        q, k, v = (F.linear(h, p.weight, p.bias).reshape(n, t, self.heads, d // self.heads).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        a = F.scaled_dot_product_attention(q, k, v)  # softmax(q·kᵀ / √head_dim) · v, as the graph does
        x = x + self.out_proj(a.transpose(1, 2).reshape(n, t, d))
        h = self.fc1(self.ln_2(x))
        return x + self.fc2(h * torch.sigmoid(1.702 * h))


class ClipTower(nn.Module):
    """CLIP ViT image tower: patch embedding, class + position embeddings, ``ln_pre``, blocks, ``ln_post``, ``proj``."""

    def __init__(self, *, width: int, layers: int, heads: int, patch: int, image_size: int, embed_dim: int,
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.patch = patch
        self.grid = (image_size // patch, image_size // patch)
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(1 + self.grid[0] * self.grid[1], width))
        self.ln_pre = nn.LayerNorm(width, eps=eps)
        self.blocks = nn.ModuleList(Block(width, heads, eps) for _ in range(layers))
        self.ln_post = nn.LayerNorm(width, eps=eps)
        self.proj = QLinear(width, embed_dim, bias=False)

    def forward(self, pixels: torch.Tensor) -> TowerOutput:
        """``pixels``: N×3×S×S, already through :meth:`~core.encoders.clip.ClipSpec.to_tensor`."""
        x = self.conv1(pixels).flatten(2).transpose(1, 2)  # N×(g·g)×D
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding)
        tokens = []
        for block in self.blocks:
            x = block(x)
            tokens.append(x[:, 0])
        emb = self.proj(self.ln_post(x[:, 0]))
        emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return TowerOutput(embedding=emb, cls=x[:, 0], layers=torch.stack(tokens, dim=1))


def _dequantised(inits: dict[str, np.ndarray], node: Any) -> np.ndarray:
    """The float32 matrix (in × out) behind one ``MatMulInteger`` node: ``(q − zero_point) · scale``."""
    q_name, zp_name = node.input[1], node.input[3]
    scale_name = q_name[: -len("_quantized")] + "_scale"
    if q_name not in inits or zp_name not in inits or scale_name not in inits:
        raise EncoderError(f"{node.name}: the INT8 weight, its scale or zero point is missing from the file.")
    q = inits[q_name].astype(np.float32)
    return (q - inits[zp_name].astype(np.float32)) * inits[scale_name].astype(np.float32)


def build_tower(path: str | os.PathLike) -> ClipTower:
    """The tower with the file's weights, dequantised to float32 (eval mode, no gradients on weights)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in g.node if n.op_type == "Constant"}
    try:
        cls_emb = inits["vision_model.embeddings.class_embedding"]
        conv = inits["vision_model.embeddings.patch_embedding.weight"]
        pos = inits["vision_model.embeddings.position_embedding.weight"]
    except KeyError as exc:
        raise EncoderError(f"{Path(path).name} is not a CLIP vision export (no {exc.args[0]}).") from None
    width, patch = int(cls_emb.shape[0]), int(conv.shape[-1])
    depth = 1 + max(int(m.group(1)) for k in inits if (m := re.match(r"vision_model\.encoder\.layers\.(\d+)\.", k)))
    grid = int(round((pos.shape[0] - 1) ** 0.5))
    # the heads: the attention reshape's target (batch, tokens, heads, head_dim)
    heads_const = consts.get("/vision_model/encoder/layers.0/self_attn/Constant_4_output_0")
    heads = int(np.asarray(heads_const).reshape(-1)[0]) if heads_const is not None else width // 64
    eps = float(consts.get("/vision_model/pre_layrnorm/Constant_1_output_0", 1e-5))
    mats = {}
    proj = None
    for node in g.node:
        if node.op_type != "MatMulInteger":
            continue
        if node.name.startswith("/visual_projection/"):
            proj = _dequantised(inits, node)
        elif (m := _LAYER_RE.match(node.name)):
            mats[(int(m.group(1)), m.group(3))] = _dequantised(inits, node)
    if proj is None or len(mats) != 6 * depth:
        raise EncoderError(f"{Path(path).name} does not have the expected quantised CLIP matrices.")
    tower = ClipTower(width=width, layers=depth, heads=heads, patch=patch, image_size=grid * patch,
                      embed_dim=int(proj.shape[1]), eps=eps)
    t = lambda a: torch.from_numpy(np.array(a, dtype=np.float32))  # noqa: E731  (a writable copy)
    vm = "vision_model."
    with torch.no_grad():
        tower.conv1.weight.copy_(t(conv))
        tower.class_embedding.copy_(t(cls_emb))
        tower.positional_embedding.copy_(t(pos))
        for ln, name in ((tower.ln_pre, "pre_layrnorm"), (tower.ln_post, "post_layernorm")):
            ln.weight.copy_(t(inits[f"{vm}{name}.weight"]))
            ln.bias.copy_(t(inits[f"{vm}{name}.bias"]))
        tower.proj.weight.copy_(t(proj.T))
        for i, b in enumerate(tower.blocks):
            pre = f"{vm}encoder.layers.{i}."
            for ln, name in ((b.ln_1, "layer_norm1"), (b.ln_2, "layer_norm2")):
                ln.weight.copy_(t(inits[pre + name + ".weight"]))
                ln.bias.copy_(t(inits[pre + name + ".bias"]))
            for lin, name, part in ((b.q_proj, "q_proj", "self_attn"), (b.k_proj, "k_proj", "self_attn"),
                                    (b.v_proj, "v_proj", "self_attn"), (b.out_proj, "out_proj", "self_attn"),
                                    (b.fc1, "fc1", "mlp"), (b.fc2, "fc2", "mlp")):
                lin.weight.copy_(t(mats[(i, name)].T))
                lin.bias.copy_(t(inits[f"{pre}{part}.{name}.bias"]))
    tower.eval()
    for p in tower.parameters():
        p.requires_grad_(False)
    return tower


_TOWERS: dict[str, ClipTower] = {}
_TOWERS_LOCK = threading.Lock()


def tower_for(encoder: Any) -> ClipTower:
    """The torch tower of a loaded (hash-verified) encoder, built once per encoder key and shared."""
    with _TOWERS_LOCK:
        tower = _TOWERS.get(encoder.key)
        if tower is None:
            tower = _TOWERS[encoder.key] = build_tower(encoder.path)
        return tower

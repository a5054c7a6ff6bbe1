"""A faster, numerically equivalent copy of a network for CPU inference.

Exact rewrites (no approximation beyond float rounding):
- the stem's 1×1 conv (no bias, no activation) is merged into the 3×3 conv after it;
- a bottleneck whose middle conv is 1×1 with stride s computes its first 1×1
  conv at stride s instead (the skipped positions were never used);
- every BatchNorm is folded into the conv before it;
then the graph is traced in channels-last layout and frozen, which lets
oneDNN fuse conv+ReLU and pick its fastest kernels. Gradients (GradCAM)
use the original eager model, never this one.

``precision="bf16"`` (see :mod:`core.model.precision`) is the one approximate
variant: the input representation (NPR residuals are small differences that
bf16's 8-bit mantissa would round away) and the stem conv stay fp32, the
residual body runs in bfloat16, and the head sums the features in fp32.
``precision="int8"`` hands the same folded network to ONNX Runtime, statically
quantised (:mod:`core.model.int8`): representation, stem conv and head in fp32,
the residual body's convs in int8.
"""
from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn

from core.model.models import Bottleneck, LaDeDa, TinyBlock, TinyLaDeDa


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return a conv with bias that equals ``bn(conv(x))`` in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


def _merge_1x1_into(first: nn.Conv2d, second: nn.Conv2d) -> nn.Conv2d:
    """``second(first(x))`` as one conv, when ``first`` is a bias-free 1×1 stride-1 conv."""
    merged = nn.Conv2d(first.in_channels, second.out_channels, second.kernel_size, second.stride,
                       second.padding, bias=second.bias is not None)
    with torch.no_grad():
        w1 = first.weight[:, :, 0, 0]  # mid × in
        merged.weight.copy_(torch.einsum("omhw,mi->oihw", second.weight, w1))
        if second.bias is not None:
            merged.bias.copy_(second.bias)
    return merged


def _fold_bottleneck(block: Bottleneck) -> None:
    if block.conv2.kernel_size == (1, 1) and block.conv2.stride != (1, 1):
        block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)
    block.conv1, block.bn1 = _fold_bn(block.conv1, block.bn1), nn.Identity()
    block.conv2, block.bn2 = _fold_bn(block.conv2, block.bn2), nn.Identity()
    block.conv3, block.bn3 = _fold_bn(block.conv3, block.bn3), nn.Identity()
    if block.downsample is not None:
        conv, bn = block.downsample[0], block.downsample[1]
        block.downsample = nn.Sequential(_fold_bn(conv, bn))


def fold_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode deep copy with the exact rewrites above applied (still eager)."""
    m = copy.deepcopy(model).eval()
    if isinstance(m, (LaDeDa, TinyLaDeDa)):
        m.conv2 = _fold_bn(_merge_1x1_into(m.conv1, m.conv2), m.bn1)
        m.conv1, m.bn1 = nn.Identity(), nn.Identity()
    if isinstance(m, LaDeDa):
        for layer in (m.layer1, m.layer2, m.layer3, m.layer4):
            for block in layer:
                _fold_bottleneck(block)
    elif isinstance(m, TinyLaDeDa):
        for block in m.layer1:
            assert isinstance(block, TinyBlock)
            block.conv1, block.bn1 = _fold_bn(block.conv1, block.bn1), nn.Identity()
            block.conv2, block.bn2 = _fold_bn(block.conv2, block.bn2), nn.Identity()
    return m


class MixedPrecision(nn.Module):
    """A folded LaDeDa/Tiny with the stem in fp32 and the body in ``dtype``; patch logits in fp32."""

    def __init__(self, folded: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        if not isinstance(folded, (LaDeDa, TinyLaDeDa)):
            raise TypeError(f"mixed precision needs a LaDeDa or Tiny-LaDeDa, not {type(folded).__name__}")
        self.representation = folded.representation
        self.input_scale = float(getattr(folded, "input_scale", 1.0))
        self.stem = folded.conv2  # the merged, BN-folded stem conv (fp32)
        names = ("layer1", "layer2", "layer3", "layer4") if isinstance(folded, LaDeDa) else ("layer1",)
        self.body = nn.Sequential(*(getattr(folded, n) for n in names)).to(dtype)
        self.fc = folded.fc
        self.dtype = dtype

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-patch features before ``fc``, returned in fp32 (same contract as the models' own)."""
        x = self.representation(x)
        if self.input_scale != 1.0:
            x = x * self.input_scale
        x = torch.relu(self.stem(x))
        return self.body(x.to(self.dtype)).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return torch.einsum("nchw,oc->nohw", f, self.fc.weight) + self.fc.bias.view(1, -1, 1, 1)


class _LogitsAndPooled(nn.Module):
    """Patch logits and the pooled features (mean over patches of the features before ``fc``).

    One pass gives both: the image logit is ``fc(pooled) + b`` exactly, so a head
    refitted on stored pooled features applies to every patch of the same map.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.net.features(x)
        logits = torch.einsum("nchw,oc->nohw", f, self.net.fc.weight) + self.net.fc.bias.view(1, -1, 1, 1)
        return logits, f.mean(dim=(2, 3))


class ServingModel:
    """Callable: N×3×H×W float32 → N×1×H'×W' patch logits, the fast way.

    :meth:`with_features` also returns the N×C pooled features from the same pass.
    """

    def __init__(self, model: nn.Module, example_hw: tuple[int, int] = (256, 256), jit: bool = True,
                 warmup: int = 5, precision: str = "fp32", int8_calibration: dict | None = None) -> None:
        if precision not in ("fp32", "bf16", "int8"):
            raise ValueError(f"ServingModel precision must be fp32, bf16 or int8, not {precision!r}")
        if precision == "int8":
            if int8_calibration is None:
                raise ValueError("the int8 path needs the checkpoint's int8 calibration (core.model.int8)")
            from core.model.int8 import Int8Serving

            self.precision, self.jit = precision, False
            self._module = Int8Serving(model, int8_calibration)
            example = torch.randn(1, 3, *example_hw)
            for _ in range(min(warmup, 1)):
                self._module(example)
            return
        folded = fold_for_inference(model)
        if precision == "bf16":
            folded = MixedPrecision(folded, torch.bfloat16).eval()
        folded = _LogitsAndPooled(folded).eval().to(memory_format=torch.channels_last)
        self.precision = precision
        self.jit = jit
        if jit:
            # oneDNN graph fusion (conv+add+ReLU) measured 1.15x over plain frozen
            # oneDNN here; it specialises on the warm-up shape (the spec's size).
            torch.jit.enable_onednn_fusion(True)
            torch.set_flush_denormal(True)  # denormal activations stall AVX2 FMA units
            example = torch.randn(1, 3, *example_hw).to(memory_format=torch.channels_last)
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(folded, example, check_trace=False)
                self._module = torch.jit.freeze(traced)
                for _ in range(warmup):  # the profiling executor fuses after a few runs
                    self._module(example)
        else:
            self._module = folded

    def with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N×1×H'×W' patch logits, N×C pooled features)."""
        with torch.inference_mode():
            logits, pooled = self._module(x.contiguous(memory_format=torch.channels_last))
            return logits.contiguous(), pooled

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.with_features(x)[0]

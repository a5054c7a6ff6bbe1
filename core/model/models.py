"""LaDeDa (receptive field 5/9/17/33) and Tiny-LaDeDa, computing exactly what
the official implementation computes, with its state-dict key layout.

``forward`` returns the patch-logit map (N×1×H'×W'); the image logit is its
mean (see :func:`image_logit`). Because the head is linear, the mean of patch
logits equals the head applied to the mean feature, so the map explains the
score exactly. Non-square inputs work: shortcut crops are per dimension.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from core.model.representations import HALO, InputRepresentation
from core.errors import InvalidArgumentError

#: Which layer's first block has a 3×3 middle conv, by receptive field.
_KERNEL3 = {5: (1, 0, 0, 0), 9: (1, 1, 0, 0), 17: (1, 1, 1, 0), 33: (1, 1, 1, 1)}
RECEPTIVE_FIELDS = tuple(_KERNEL3)


@dataclass(frozen=True)
class PatchGeometry:
    """Patch (i, j) of the map sees input rows ``offset + i*stride`` … ``+ size - 1``."""

    size: int
    stride: int
    offset: int

    def box(self, row: int, col: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) in model-input pixels, clipped, x1/y1 exclusive."""
        y0 = self.offset + row * self.stride
        x0 = self.offset + col * self.stride
        return max(0, x0), max(0, y0), min(width, x0 + self.size), min(height, y0 + self.size)


class Bottleneck(nn.Module):
    """ResNet-50 bottleneck with padding 0; the shortcut is cropped bottom/right."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 kernel_size: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=kernel_size, stride=stride, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        # Crop the shortcut at the bottom/right to the block output, per dimension
        # (a no-op slice when shapes match, which keeps traced graphs shape-generic).
        residual = residual[..., : out.shape[-2], : out.shape[-1]]
        return self.relu(out.add_(residual))


class LaDeDa(nn.Module):
    """BagNet-style ResNet-50 without padding; receptive field 5, 9, 17 or 33."""

    arch_name = "ladeda"

    def __init__(self, receptive_field: int = 9, input_representation: str = "NPR",
                 layers: tuple[int, ...] = (3, 4, 6, 3), strides: tuple[int, ...] = (2, 2, 2, 1),
                 input_scale: float = 1.0) -> None:
        super().__init__()
        # One revision of the official file multiplies the input by 2/3; the
        # parity fixtures (and the published weights) use the unscaled input.
        self.input_scale = float(input_scale)
        if receptive_field not in _KERNEL3:
            raise InvalidArgumentError(f"LaDeDa receptive field must be one of {RECEPTIVE_FIELDS}")
        self.receptive_field = receptive_field
        self.representation = InputRepresentation(input_representation)
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=1, bias=False)
        self.conv2 = nn.Conv2d(64, 64, kernel_size=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=0.001)
        self.relu = nn.ReLU(inplace=True)
        k3 = _KERNEL3[receptive_field]
        self.layer1 = self._make_layer(64, layers[0], strides[0], k3[0])
        self.layer2 = self._make_layer(128, layers[1], strides[1], k3[1])
        self.layer3 = self._make_layer(256, layers[2], strides[2], k3[2])
        self.layer4 = self._make_layer(512, layers[3], strides[3], k3[3])
        self.fc = nn.Linear(512 * Bottleneck.expansion, 1)
        self._stride = math.prod(strides)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()

    def _make_layer(self, planes: int, blocks: int, stride: int, kernel3: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, kernel_size=3 if kernel3 else 1)]
        self.inplanes = planes * Bottleneck.expansion
        for i in range(1, blocks):
            layers.append(Bottleneck(self.inplanes, planes, kernel_size=1 if kernel3 <= i else 3))
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-patch 2048-d features (N×2048×H'×W')."""
        x = self.representation(x)
        x = self.conv1(x if self.input_scale == 1.0 else x * self.input_scale)
        x = self.relu(self.bn1(self.conv2(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch-logit map, N×1×H'×W'."""
        f = self.features(x)
        return torch.einsum("nchw,oc->nohw", f, self.fc.weight) + self.fc.bias.view(1, -1, 1, 1)

    @property
    def patch_geometry(self) -> PatchGeometry:
        halo = HALO[self.representation.name]
        return PatchGeometry(size=self.receptive_field + 2 * halo, stride=self._stride, offset=-halo)


class TinyBlock(nn.Module):
    """Tiny-LaDeDa's single block: 1×1 conv, BN, ReLU, 3×3 stride-2 conv, BN, ReLU."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(x)))


class TinyLaDeDa(nn.Module):
    """The 4-conv student distilled from LaDeDa's patch logits (receptive field 7 with right_diag)."""

    arch_name = "tiny"

    def __init__(self, input_representation: str = "right_diag", channels: int = 8) -> None:
        super().__init__()
        self.representation = InputRepresentation(input_representation)
        self.conv1 = nn.Conv2d(3, channels, kernel_size=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, bias=False)
        self.bn1 = nn.BatchNorm2d(channels, momentum=0.001)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(TinyBlock(channels))
        self.fc = nn.Linear(channels, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.representation(x)
        x = self.relu(self.bn1(self.conv2(self.conv1(x))))
        return self.layer1(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return torch.einsum("nchw,oc->nohw", f, self.fc.weight) + self.fc.bias.view(1, -1, 1, 1)

    @property
    def patch_geometry(self) -> PatchGeometry:
        halo = HALO[self.representation.name]
        return PatchGeometry(size=7 + 2 * halo, stride=2, offset=-halo)


def image_logit(patch_map: torch.Tensor) -> torch.Tensor:
    """Image logit = mean of the patch logits (shape N)."""
    return patch_map.mean(dim=(1, 2, 3))


ARCHES = ("ladeda5", "ladeda9", "ladeda17", "ladeda33", "tiny")


def build_model(arch: dict | str, input_representation: str) -> nn.Module:
    """Build from an arch record ``{"name": "ladeda", "receptive_field": 9}`` or a short name."""
    if isinstance(arch, str):
        arch = arch_record(arch)
    name = arch.get("name")
    if name == "ladeda":
        return LaDeDa(int(arch.get("receptive_field", 9)), input_representation,
                      input_scale=float(arch.get("input_scale", 1.0)))
    if name == "tiny":
        return TinyLaDeDa(input_representation, int(arch.get("channels", 8)))
    raise InvalidArgumentError(f"Unknown architecture {name!r}")


def arch_record(short: str) -> dict:
    """'ladeda9' → {"name": "ladeda", "receptive_field": 9}; 'tiny' → {"name": "tiny", "channels": 8}."""
    short = short.lower()
    if short in ("tiny", "tiny-ladeda", "tiny_ladeda"):
        return {"name": "tiny", "channels": 8}
    if short.startswith("ladeda"):
        rf = int(short[len("ladeda"):] or 9)
        if rf not in _KERNEL3:
            raise InvalidArgumentError(f"LaDeDa receptive field must be one of {RECEPTIVE_FIELDS}")
        return {"name": "ladeda", "receptive_field": rf}
    raise InvalidArgumentError(f"Unknown architecture {short!r}; choose from {ARCHES}")


def arch_label(arch: dict) -> str:
    return "Tiny-LaDeDa" if arch.get("name") == "tiny" else f"LaDeDa{arch.get('receptive_field', 9)}"

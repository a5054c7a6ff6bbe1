"""Input representations: what LaDeDa computes from the normalised image
before its first convolution (the paper's NPR and gradient filters).

One small function per representation, chosen by name from the checkpoint's
preprocessing spec. Each keeps the spatial size of its input.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from core.errors import InvalidArgumentError

_KERNELS = {
    "x_grad": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "y_grad": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "left_diag": [[0, 1, 2], [-1, 0, 1], [-2, -1, 0]],
    "right_diag": [[-2, -1, 0], [-1, 0, 1], [0, 1, 2]],
}


def raw(x: torch.Tensor) -> torch.Tensor:
    return x


def npr(x: torch.Tensor) -> torch.Tensor:
    """Neighbouring-pixel relationships: x minus its nearest ×0.5 then ×2 copy.

    Equals the official ``x - up(down(x))`` (both nearest) on even sizes; on
    odd sizes it stays defined (each pixel minus the top-left of its 2×2 cell).
    """
    h, w = x.shape[-2:]
    rows = torch.arange(h, device=x.device) // 2 * 2
    cols = torch.arange(w, device=x.device) // 2 * 2
    return x - x.index_select(-2, rows).index_select(-1, cols)


def _depthwise(kernel: list[list[int]]) -> Callable[[torch.Tensor], torch.Tensor]:
    def apply(x: torch.Tensor) -> torch.Tensor:
        k = torch.tensor(kernel, dtype=x.dtype, device=x.device).view(1, 1, 3, 3).repeat(x.shape[1], 1, 1, 1)
        return F.conv2d(x, k, groups=x.shape[1], padding=1)

    return apply


REPRESENTATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "raw": raw,
    "NPR": npr,
    **{name: _depthwise(k) for name, k in _KERNELS.items()},
}

#: Extra pixels each representation looks at on each side (for patch boxes).
HALO = {"raw": 0, "NPR": 0, "x_grad": 1, "y_grad": 1, "left_diag": 1, "right_diag": 1}


class InputRepresentation(torch.nn.Module):
    """Module wrapper so the representation is part of the network's forward."""

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in REPRESENTATIONS:
            raise InvalidArgumentError(f"Unknown input representation {name!r}; choose from {sorted(REPRESENTATIONS)}")
        self.name = name
        self._fn = REPRESENTATIONS[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fn(x)

    def extra_repr(self) -> str:
        return self.name

"""A hand-made, LaDeDa-shaped teacher: local residual statistics and a linear head.

Why it exists: on two CPU cores LaDeDa9 learns almost nothing from image labels
alone within an hour — one label per image is a weak signal for ~9,000 patch
decisions. This teacher is a patch-logit model with exactly LaDeDa9's geometry
(9×9 windows at stride 8): every window is described by soft histograms of its
residual energies (Laplacian, horizontal/vertical gradients, NPR), jointly
with its content contrast, plus saturation, chroma residuals and 8-px
blockiness; a logistic regression is fitted on the image means of those
descriptors. Because the image logit is the mean of the window logits, the
fitted weights give a dense per-patch target that LaDeDa9 regresses much
faster than it learns from the pooled BCE (``train --patch-teacher``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from core.errors import InvalidArgumentError, ModelFileError

WINDOW, STRIDE = 9, 8  #: LaDeDa9 (NPR): patch (i, j) sees rows 8i … 8i+8
_LAP = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
_ENERGY_BINS, _JOINT_BINS, _SMALL_BINS = 16, 8, 12
FEATURE_NAMES: list[str] = (
    [f"{r}_energy_{i}" for r in ("lap", "dx", "dy", "npr") for i in range(_ENERGY_BINS)]
    + [f"{r}_contrast_x_energy_{i}" for r in ("lap", "dx", "dy", "npr") for i in range(_JOINT_BINS ** 2)]
    + [f"saturation_{i}" for i in range(_SMALL_BINS)]
    + [f"{c}_residual_{i}" for c in ("blue_chroma", "red_chroma") for i in range(_SMALL_BINS)]
    + [f"{d}_blockiness_{i}" for d in ("column", "row") for i in range(_SMALL_BINS)]
)


def map_size(n: int) -> int:
    """Windows along a side of ``n`` pixels (same as LaDeDa9's patch map)."""
    return (n - WINDOW) // STRIDE + 1


def _soft_bins(v: torch.Tensor, lo: float, hi: float, n: int) -> torch.Tensor:
    """Triangular soft assignment of a B×1×h×w map to ``n`` bins: B×n×h×w.

    Sums to 1 for values inside [lo, hi]; values beyond fade out over one bin width
    (a window of pure noise, log-energy > 5, weighs less than a textured one).
    """
    centres = torch.linspace(lo, hi, n, dtype=v.dtype, device=v.device).view(1, n, 1, 1)
    return (1 - (v - centres).abs() / ((hi - lo) / (n - 1))).clamp(min=0)


def _joint_bins(u: torch.Tensor, v: torch.Tensor, lo: float, hi: float, n: int) -> torch.Tensor:
    a, b = _soft_bins(u, lo, hi, n), _soft_bins(v, lo, hi, n)
    return (a.unsqueeze(2) * b.unsqueeze(1)).flatten(1, 2)


def _blockiness(adiff: torch.Tensor, h: int, w: int, along_columns: bool) -> torch.Tensor:
    """log((1+|step| across the window's 8-px block edge) / (1+mean |step| inside)) per window."""
    if along_columns:  # adiff: B×1×H×(W-1); average over the 9 rows of each window first
        m = F.avg_pool2d(adiff, (WINDOW, 1), (STRIDE, 1))[..., :h, : w * STRIDE]
        m = m.reshape(m.shape[0], 1, h, w, STRIDE)
    else:  # adiff: B×1×(H-1)×W
        m = F.avg_pool2d(adiff, (1, WINDOW), (1, STRIDE))[..., : h * STRIDE, :w]
        m = m.reshape(m.shape[0], 1, h, STRIDE, w).transpose(-1, -2)
    return torch.log((m[..., STRIDE - 1] + 1) / (m[..., : STRIDE - 1].mean(-1) + 1))


def patch_features(x: torch.Tensor) -> torch.Tensor:
    """Per-window descriptors of RGB images in [0, 1]: B×3×H×W → B×D×h×w (h = map_size(H))."""
    x = x.float() * 255.0
    h, w = map_size(x.shape[-2]), map_size(x.shape[-1])
    if h < 1 or w < 1:
        raise InvalidArgumentError(f"images must be at least {WINDOW}×{WINDOW} pixels")
    g = x.mean(1, keepdim=True)
    lap = F.conv2d(g, _LAP.to(g))
    dx = (g[..., :, 1:] - g[..., :, :-1]).abs()
    dy = (g[..., 1:, :] - g[..., :-1, :]).abs()
    rows = torch.arange(g.shape[-2], device=g.device) // 2 * 2
    cols = torch.arange(g.shape[-1], device=g.device) // 2 * 2
    npr = g - g.index_select(-2, rows).index_select(-1, cols)

    mean = F.avg_pool2d(g, WINDOW, STRIDE)
    contrast = torch.log1p((F.avg_pool2d(g * g, WINDOW, STRIDE) - mean ** 2).clamp(min=0).sqrt())
    energies = [
        F.avg_pool2d(lap.abs(), WINDOW - 2, STRIDE),
        F.avg_pool2d(dx, (WINDOW, WINDOW - 1), STRIDE),
        F.avg_pool2d(dy, (WINDOW - 1, WINDOW), STRIDE),
        F.avg_pool2d(npr.abs(), WINDOW, STRIDE),
    ]
    energies = [torch.log1p(e[..., :h, :w]) for e in energies]
    contrast = contrast[..., :h, :w]
    feats = [_soft_bins(e, 0.0, 5.0, _ENERGY_BINS) for e in energies]
    feats += [_joint_bins(contrast, e, 0.0, 5.0, _JOINT_BINS) for e in energies]
    mx, mn = x.max(1, keepdim=True).values, x.min(1, keepdim=True).values
    feats.append(_soft_bins(F.avg_pool2d((mx - mn) / (mx + 1), WINDOW, STRIDE)[..., :h, :w], 0.0, 1.0, _SMALL_BINS))
    for chroma in (x[:, 2:3] - g, x[:, 0:1] - g):
        e = torch.log1p(F.avg_pool2d(F.conv2d(chroma, _LAP.to(g)).abs(), WINDOW - 2, STRIDE))[..., :h, :w]
        feats.append(_soft_bins(e, 0.0, 5.0, _SMALL_BINS))
    feats.append(_soft_bins(_blockiness(dx, h, w, along_columns=True), -1.0, 1.0, _SMALL_BINS))
    feats.append(_soft_bins(_blockiness(dy, h, w, along_columns=False), -1.0, 1.0, _SMALL_BINS))
    return torch.cat(feats, dim=1)


@dataclass
class PatchTeacher:
    """Patch logit = weights · descriptors + bias; the image logit is their mean."""

    weights: torch.Tensor  #: D
    bias: float
    info: dict = field(default_factory=dict)

    @torch.no_grad()
    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """B×3×H×W RGB in [0, 1] → B×1×h×w patch logits (LaDeDa9's map size)."""
        f = patch_features(x)
        return torch.einsum("bdhw,d->bhw", f, self.weights.to(f)).unsqueeze(1) + self.bias

    def image_logit(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_logits(x).mean(dim=(1, 2, 3))

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"kind": "patch-teacher", "weights": self.weights, "bias": self.bias, "info": self.info,
                    "feature_names": FEATURE_NAMES}, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PatchTeacher":
        try:
            blob = torch.load(path, map_location="cpu", weights_only=False)
        except (OSError, RuntimeError, EOFError, ValueError) as exc:
            raise ModelFileError(f"Cannot read the patch teacher {path} ({exc}).") from None
        if not isinstance(blob, dict) or blob.get("kind") != "patch-teacher":
            raise ModelFileError(f"{path} is not a patch-teacher file (python -m core fit-teacher writes one)")
        if blob["weights"].numel() != len(FEATURE_NAMES):
            raise ModelFileError(f"{path} was fitted on {blob['weights'].numel()} descriptors; this code has "
                             f"{len(FEATURE_NAMES)}. Refit it.")
        return cls(weights=blob["weights"].float(), bias=float(blob["bias"]), info=blob.get("info", {}))


def image_descriptor(pixels: np.ndarray) -> np.ndarray:
    """Mean window descriptor of one H×W×3 uint8 image (what the linear head sees)."""
    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    return patch_features(x).mean(dim=(2, 3))[0].numpy()


def fit_patch_teacher(train: list[np.ndarray], labels: list[int], *, l2: float = 0.01,
                      sd_floor: float = 0.01) -> PatchTeacher:
    """Logistic regression on standardised image descriptors, folded back into per-patch weights.

    ``l2`` is scikit-learn's C (inverse regularisation strength). ``sd_floor``
    bounds the standardisation: a histogram bin that is almost never occupied
    has a tiny spread across images, and dividing by it would give that bin a
    weight of thousands — harmless for the image mean but a patch map of huge,
    unlearnable spikes (patch-logit variance 71 without the floor, 14 with 0.01
    on the corpus, at the same validation AUC).
    """
    from sklearn.linear_model import LogisticRegression

    X = np.stack([image_descriptor(p) for p in train]).astype(np.float64)
    y = np.asarray(labels)
    mu, sd = X.mean(0), np.maximum(X.std(0), sd_floor) + 1e-6
    clf = LogisticRegression(C=l2, max_iter=10000).fit((X - mu) / sd, y)
    w = clf.coef_[0] / sd
    b = float(clf.intercept_[0] - (clf.coef_[0] * mu / sd).sum())
    return PatchTeacher(weights=torch.from_numpy(w).float(), bias=b,
                        info={"l2_C": l2, "sd_floor": sd_floor, "n_train": int(len(y)), "n_features": int(X.shape[1])})

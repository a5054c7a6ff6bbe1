"""The served logit: a logistic stack of the LaDeDa and CLIP logits.

``fused = w_ladeda * z_ladeda + w_clip * z_clip + b``. The weights are fitted
with a penalty toward a *prior* that says how each part generalises to new
sources, not how it does in distribution: the bundled backbone saw every
corpus source, so its in-distribution strength is a poor guide (see the model
card). The default prior trusts CLIP and gives LaDeDa no weight; reviewer
labels (out-of-fold predictions on them) move the weights, with a prior worth
``PRIOR_PSEUDO_COUNT`` labels, so a handful cannot overturn it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.learning.heads import fit_logistic

#: The default belief: CLIP generalises, LaDeDa's in-distribution strength does not transfer.
DEFAULT_PRIOR = {"w_ladeda": 0.0, "w_clip": 1.0, "bias": 0.0}
#: How many labels the prior is worth.
PRIOR_PSEUDO_COUNT = 40.0


@dataclass
class Fusion:
    w_ladeda: float
    w_clip: float
    bias: float
    prior: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PRIOR))
    n_fit: int = 0

    def fuse(self, z_ladeda: np.ndarray | float, z_clip: np.ndarray | float | None) -> np.ndarray:
        """The fused logit; without CLIP there is no fusion, only LaDeDa (callers say so)."""
        zl = np.asarray(z_ladeda, dtype=np.float64)
        if z_clip is None:
            return zl
        return self.w_ladeda * zl + self.w_clip * np.asarray(z_clip, dtype=np.float64) + self.bias

    def to_record(self) -> dict[str, Any]:
        return {"w_ladeda": float(self.w_ladeda), "w_clip": float(self.w_clip), "bias": float(self.bias),
                "prior": {k: float(v) for k, v in self.prior.items()}, "n_fit": int(self.n_fit)}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "Fusion":
        return cls(w_ladeda=float(rec["w_ladeda"]), w_clip=float(rec["w_clip"]), bias=float(rec["bias"]),
                   prior=dict(rec.get("prior") or DEFAULT_PRIOR), n_fit=int(rec.get("n_fit", 0)))


def fit_fusion(z_ladeda: np.ndarray, z_clip: np.ndarray, y: np.ndarray, *, prior: dict[str, float] | None = None,
               pseudo_count: float = PRIOR_PSEUDO_COUNT, sample_weight: np.ndarray | None = None) -> Fusion:
    """Fit the stack on (LaDeDa logit, CLIP logit, label) rows, pulled toward ``prior``."""
    from core.learning.heads import LinearHead

    prior = dict(prior or DEFAULT_PRIOR)
    x = np.stack([np.asarray(z_ladeda, np.float64), np.asarray(z_clip, np.float64)], axis=1)
    n = float(x.shape[0])
    start = LinearHead(weight=np.array([prior["w_ladeda"], prior["w_clip"]]), bias=float(prior.get("bias", 0.0)),
                       mean=np.zeros(2), scale=np.ones(2))
    head = fit_logistic(x, y, l2=pseudo_count / max(n, 1.0), prior=start, sample_weight=sample_weight)
    return Fusion(w_ladeda=float(head.weight[0]), w_clip=float(head.weight[1]), bias=float(head.bias),
                  prior=prior, n_fit=int(n))

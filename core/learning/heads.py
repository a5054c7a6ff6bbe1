"""Linear heads on frozen features: logistic regression pulled toward a prior.

Why a prior instead of plain L2: a few reviewer labels should *nudge* a head,
not replace it. The penalty is ``l2 * ||w - w0||²`` in standardised feature
space, so with ``w0`` = the current head and little data the fit stays near
the current head; with ``w0 = 0`` it is ordinary ridge-logistic regression.

A :class:`LinearHead` stores the standardisation (mean, scale) and the
weights, and can be written back as raw weights (``w / scale``) so a LaDeDa
head becomes an ``fc`` layer that applies to every patch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize

from core.errors import DetectorError


class HeadError(DetectorError):
    """A head that cannot be fitted (one class, no rows)."""

    code = "head_error"


@dataclass
class LinearHead:
    """``logit = w · (x - mean) / scale + b``."""

    weight: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray
    feature: str = ""  #: which features it reads, e.g. "ladeda", "clip_embedding"

    def logits(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        return z @ self.weight + self.bias

    def raw(self) -> tuple[np.ndarray, float]:
        """Equivalent weights on unstandardised features: ``logit = w_raw · x + b_raw``."""
        w_raw = self.weight / self.scale
        return w_raw, float(self.bias - np.dot(w_raw, self.mean))

    @classmethod
    def from_raw(cls, weight: np.ndarray, bias: float, mean: np.ndarray, scale: np.ndarray,
                 feature: str = "") -> "LinearHead":
        """The head with these raw weights, expressed in the given standardisation."""
        w = np.asarray(weight, dtype=np.float64).ravel() * scale
        return cls(weight=w, bias=float(bias + np.dot(np.asarray(weight, np.float64).ravel(), mean)),
                   mean=np.asarray(mean, np.float64), scale=np.asarray(scale, np.float64), feature=feature)

    def to_record(self) -> dict[str, Any]:
        import torch

        return {"feature": self.feature, "bias": float(self.bias),
                "weight": torch.tensor(self.weight, dtype=torch.float32),
                "mean": torch.tensor(self.mean, dtype=torch.float32),
                "scale": torch.tensor(self.scale, dtype=torch.float32)}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "LinearHead":
        arr = lambda v: np.asarray(v.numpy() if hasattr(v, "numpy") else v, dtype=np.float64)  # noqa: E731
        return cls(weight=arr(rec["weight"]), bias=float(rec["bias"]), mean=arr(rec["mean"]),
                   scale=arr(rec["scale"]), feature=str(rec.get("feature", "")))


def standardisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    return mean, np.where(scale > 1e-6, scale, 1.0)


def balanced_weights(sources: list[str] | None, n: int, alpha: float = 1.0) -> np.ndarray:
    """Row weights (mean 1) that give each source a total weight ∝ ``n_source ** (1 - alpha)``; ones without
    sources. ``alpha`` 1 (the default): every source weighs the same; 0: every row does.

    Why: a head fitted on rows as they come learns the biggest source's shortcuts. Weighing
    sources equally generalises better to a source it never saw (leave-one-source-out over the nine
    base sources, see :mod:`core.learning.base` and the model card). Rows with an unknown source ("")
    form one group.
    """
    if not sources or len(sources) != n or len(set(sources)) < 2:
        return np.ones(n)
    names = np.asarray(sources)
    w = np.empty(n)
    for name in set(sources):
        m = names == name
        w[m] = float(m.sum()) ** -alpha
    return w * (n / w.sum())


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1.0, sample_weight: np.ndarray | None = None,
                 prior: LinearHead | None = None, mean: np.ndarray | None = None, scale: np.ndarray | None = None,
                 feature: str = "", balance: bool = True, max_iter: int = 500) -> LinearHead:
    """Weighted logistic regression with ``l2 * ||w - w_prior||²`` (per unit weight sum).

    ``balance`` reweights classes to equal total weight, so a skewed label
    stream does not shift the bias. With ``prior`` the standardisation is the
    prior's (so both live in one space) unless ``mean``/``scale`` are given.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.ndim != 2 or x.shape[0] != y.size or y.size == 0:
        raise HeadError("No rows to fit a head on.")
    if not (np.any(y == 0) and np.any(y == 1)):
        raise HeadError("A head needs both real and fake examples.")
    sw = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).ravel()
    if balance:
        for c in (0, 1):
            m = y == c
            sw[m] = sw[m] * (sw.sum() / 2) / max(sw[m].sum(), 1e-12)
    sw = sw / sw.sum()
    if prior is not None and mean is None:
        mean, scale = prior.mean, prior.scale
    if mean is None or scale is None:
        mean, scale = standardisation(x)
    z = (x - mean) / scale
    w0 = prior.weight if prior is not None else np.zeros(z.shape[1])
    b0 = prior.bias if prior is not None else 0.0

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        s = z @ w + b
        # log(1 + e^s) - y s, stably
        ll = np.logaddexp(0.0, s) - y * s
        p = 0.5 * (1.0 + np.tanh(0.5 * s))
        g = sw * (p - y)
        d = w - w0
        f = float(np.dot(sw, ll) + l2 * np.dot(d, d))
        grad = np.concatenate([z.T @ g + 2 * l2 * d, [g.sum()]])
        return f, grad

    res = minimize(loss, np.concatenate([w0, [b0]]), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter})
    return LinearHead(weight=res.x[:-1], bias=float(res.x[-1]), mean=np.asarray(mean), scale=np.asarray(scale),
                      feature=feature)

"""The learned parts a checkpoint may carry on top of its network, and the served value they give.

``checkpoint.learning`` holds (all optional except ``format``):

- ``clip_head``: a :class:`~core.learning.heads.LinearHead` on CLIP features;
- ``fusion``: the :class:`~core.learning.fusion.Fusion` of the two logits;
- ``calibration`` / ``tiers``: calibration record and review tiers of the *fused* logit
  (the checkpoint's own ``calibration``/``tiers`` stay those of LaDeDa alone, and are
  what is served when the encoder is missing);
- ``ood``: the :class:`~core.learning.ood.OodGuard`;
- ``provenance``: what they were fitted on (data hashes, labels, who, when).

:func:`served_value` is the one place that turns one image's LaDeDa logit and
features into the served logit and probability, the per-part components and
the OOD finding. Scoring, adapt's evaluation and the loop benchmark all call it.

Each part's entry in ``components`` carries its share of the served logit
(:func:`part_shares`), so the verdict can say which part decided it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from core.learning.features import CLIP_LAYERS_FEATURE, FeatureError, needs_layers
from core.learning.fusion import Fusion
from core.learning.heads import LinearHead
from core.learning.ood import OodGuard

if TYPE_CHECKING:
    from core.encoders.clip import ClipFeatures

LEARNING_FORMAT = "ladeda-learning-1"


def _sigmoid(z: float) -> float:
    return float(1.0 / (1.0 + np.exp(-float(z))))


@dataclass
class LearnedParts:
    clip_head: LinearHead | None = None
    fusion: Fusion | None = None
    calibration: dict[str, Any] | None = None
    tiers: dict[str, Any] | None = None
    ood: OodGuard | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_checkpoint(cls, checkpoint: Any) -> "LearnedParts":
        rec = getattr(checkpoint, "learning", None) or {}
        return cls.from_record(rec)

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "LearnedParts":
        if not rec:
            return cls()
        return cls(clip_head=LinearHead.from_record(rec["clip_head"]) if rec.get("clip_head") else None,
                   fusion=Fusion.from_record(rec["fusion"]) if rec.get("fusion") else None,
                   calibration=rec.get("calibration"), tiers=rec.get("tiers"),
                   ood=OodGuard.from_record(rec["ood"]) if rec.get("ood") else None,
                   provenance=dict(rec.get("provenance") or {}))

    def to_record(self) -> dict[str, Any]:
        from core.model.checkpoint import plain

        return {"format": LEARNING_FORMAT,
                "clip_head": self.clip_head.to_record() if self.clip_head else None,
                "fusion": self.fusion.to_record() if self.fusion else None,
                "calibration": plain(self.calibration), "tiers": plain(self.tiers),
                "ood": self.ood.to_record() if self.ood else None, "provenance": plain(self.provenance)}

    @property
    def fuses(self) -> bool:
        return self.clip_head is not None and self.fusion is not None

    def clip_logit(self, clip: "ClipFeatures") -> float:
        x = clip_input(self.clip_head.feature, clip.embedding, clip.cls, clip.layers)
        return float(self.clip_head.logits(x[None])[0])

    @property
    def clip_needs_layers(self) -> bool:
        """Whether the CLIP head reads the per-block CLS tokens (stored features without them cannot serve it)."""
        return self.clip_head is not None and needs_layers(self.clip_head.feature)


def clip_input(feature: str, embedding: np.ndarray, cls_token: np.ndarray,
               layers: np.ndarray | None = None) -> np.ndarray:
    """The CLIP features a head reads, by its ``feature`` name (works on one row or N rows).

    ``layers`` is one image's 12×768 per-block CLS tokens, or N×12×768."""
    if feature == "clip_embedding":
        return np.asarray(embedding)
    if feature == "clip_cls":
        return np.asarray(cls_token)
    if feature == "clip_both":
        return np.concatenate([np.asarray(embedding), np.asarray(cls_token)], axis=-1)
    if feature == CLIP_LAYERS_FEATURE:
        if layers is None:
            raise FeatureError("This CLIP head reads the per-block CLS tokens, which these stored features lack.")
        arr = np.asarray(layers)
        return arr.reshape(-1) if arr.ndim == 2 else arr.reshape(arr.shape[0], -1)
    raise ValueError(f"Unknown CLIP head feature {feature!r}")


@dataclass
class ServedValue:
    """What is served for one image, and what each part said."""

    logit: float
    probability: float
    calibrated: bool
    used: str  #: "fused" or "ladeda"
    tiers: dict[str, Any] | None
    calibration_version: str | None
    components: dict[str, Any]
    ood: dict[str, Any] | None
    note: str | None = None  #: why CLIP was not used, when it was not


#: How each part is named to an analyst (the verdict card, the evidence report).
PART_NAMES = {"clip": "CLIP second opinion", "ladeda": "LaDeDa local traces"}


def part_shares(terms: dict[str, float]) -> dict[str, float]:
    """Each part's share of the evidence: ``|term| / Σ |term|`` over the parts.

    ``term`` is the part's weighted contribution to the served logit (``w · z``). The fusion's
    intercept (bias) is nobody's evidence and is left out, so the shares sum to 1 and
    ``Σ term + bias`` is the served logit. Absolute values: a part that pulls toward "real"
    contributes as much evidence as one that pulls equally hard toward "fake". When every term
    is exactly 0 the parts share equally.
    """
    total = sum(abs(float(t)) for t in terms.values())
    if total == 0.0:
        return {k: 1.0 / len(terms) for k in terms}
    return {k: abs(float(t)) / total for k, t in terms.items()}


def share_sentence(components: dict[str, Any] | None) -> str | None:
    """The parts' probabilities and shares in words, e.g. "CLIP second opinion: 0.81 fake (94 % of the
    evidence) · LaDeDa local traces: 0.43 (6 %)"; None when the components carry no shares (older scorings)."""
    if not components:
        return None
    parts = [(k, components.get(k)) for k in ("clip", "ladeda")]
    parts = [(k, c) for k, c in parts if c and "share" in c]
    if not parts:
        return None
    parts.sort(key=lambda kc: -float(kc[1]["share"]))
    out = []
    for i, (k, c) in enumerate(parts):
        if c.get("pending"):  # the verdict-first card: LaDeDa's pass is still running
            out.append(f"{PART_NAMES[k]}: still being read (its term held at its prior)")
            continue
        p = float(c["probability"])
        side = " fake" if p >= 0.5 else " real"
        pct = f"{100 * float(c['share']):.0f} %"
        out.append(f"{PART_NAMES[k]}: {p:.2f}{side} ({pct}{' of the evidence' if i == 0 else ''})")
    return " · ".join(out)


def _probability(record: dict[str, Any] | None, z: float) -> tuple[float, bool]:
    if record:
        from core.calibration.calibrators import apply_record

        return float(apply_record(record, np.asarray([z]))[0]), True
    return _sigmoid(z), False


def served_value(checkpoint: Any, parts: LearnedParts, *, ladeda_logit: float, ladeda_probability: float,
                 ladeda_calibrated: bool, pooled: np.ndarray | None, clip: "ClipFeatures | None",
                 clip_note: str | None) -> ServedValue:
    """Fuse when both the encoder's features and a fitted fusion exist; otherwise serve LaDeDa alone."""
    lad = {"logit": round(float(ladeda_logit), 6), "probability": round(float(ladeda_probability), 6)}
    note = clip_note
    if clip is not None and not parts.fuses:
        note = "This model has no fitted CLIP head and fusion: scored by LaDeDa alone."
    ood = None
    if parts.ood is not None and pooled is not None:
        ood = parts.ood.check(pooled, clip.embedding if (clip is not None and parts.fuses) else None)
    if clip is None or not parts.fuses:
        # LaDeDa alone: its logit is the whole served logit (weight 1, no intercept)
        alone = {**lad, "term": lad["logit"], "share": 1.0}
        return ServedValue(logit=float(ladeda_logit), probability=float(ladeda_probability),
                           calibrated=ladeda_calibrated, used="ladeda", tiers=checkpoint.tiers,
                           calibration_version=checkpoint.calibration_version,
                           components={"ladeda": alone, "clip": None, "fused": dict(alone), "used": "ladeda",
                                       "clip_note": note},
                           ood=ood, note=note)
    zc = parts.clip_logit(clip)
    zf = float(parts.fusion.fuse(ladeda_logit, zc))
    pf, cal = _probability(parts.calibration, zf)
    terms = {"ladeda": parts.fusion.w_ladeda * float(ladeda_logit), "clip": parts.fusion.w_clip * zc}
    shares = part_shares(terms)
    comps = {"ladeda": {**lad, "term": round(terms["ladeda"], 6), "share": round(shares["ladeda"], 6)},
             "clip": {"logit": round(zc, 6), "probability": round(_sigmoid(zc), 6),
                      "term": round(terms["clip"], 6), "share": round(shares["clip"], 6)},
             # the fused entry's term is the parts' sum (the served logit without the intercept)
             "fused": {"logit": round(zf, 6), "probability": round(pf, 6),
                       "term": round(terms["ladeda"] + terms["clip"], 6), "share": 1.0}, "used": "fused",
             "weights": {"ladeda": round(parts.fusion.w_ladeda, 4), "clip": round(parts.fusion.w_clip, 4),
                         "bias": round(parts.fusion.bias, 4)}, "clip_note": None}
    return ServedValue(logit=zf, probability=pf, calibrated=cal, used="fused",
                       tiers=parts.tiers or checkpoint.tiers,
                       calibration_version=(parts.calibration or {}).get("version"), components=comps, ood=ood)

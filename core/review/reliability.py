"""Per-segment reliability: how often reviewers overturned the model on items like this one.

Why: a tier is only as good as its record on similar images, and the store
already holds that record. An item's *segment* is its tier plus two guardrail
findings that change how well a pixel-level detector works — whether a face
was found, and the JPEG quality (not a JPEG / below 70 / 70 or above; social
platforms re-encode at 70–85). The line next to a verdict reads e.g. "On 214
labelled items in the clearly-real tier with no face and JPEG quality below
70, reviewers overturned 18 % (95 % CI 13–24 %)."

Counted: items whose label in force is real or fake (unsure carries no ground
truth; an undone label is not in force), judged against the model's verdict on
the scoring the reviewer saw (review-tier items split at p = 0.5, as the
Monitor's overturn rate does). Below :data:`MIN_LABELS` labelled items the line
says there are too few instead of showing a number. Everything is read through
the store's public API (``labelled_items`` and ``item``), no SQL here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from core.review.store import model_verdict

if TYPE_CHECKING:  # pragma: no cover
    from core.review.store import ReviewStore

#: Fewest labelled items in a segment before a rate is shown: with 30 the 95 % interval of a
#: rate near 20 % is still about ±14 points; with fewer the number would mislead more than inform.
MIN_LABELS = 30
#: JPEG quality splitting "low" from "usual" (platforms re-encode at 70–85).
JPEG_SPLIT = 70
TIER_WORDS = {"real": "clearly-real", "review": "needs-review", "fake": "clearly-fake"}

Segment = tuple[str, bool, str]  #: (tier, has_face, jpeg bucket)


def jpeg_bucket(quality: float | None) -> str:
    if quality is None:
        return "none"
    return "low" if float(quality) < JPEG_SPLIT else "usual"


def segment_of(tier: str, guardrails: Mapping[str, Any] | None) -> Segment:
    """The segment of a scoring from its tier and its guardrail findings (``GuardrailReport.to_json()``)."""
    g = dict(guardrails or {})
    quality = g.get("jpeg_quality")
    if quality is None:
        quality = (g.get("quality") or {}).get("jpeg_quality")
    return str(tier), bool(g.get("faces")), jpeg_bucket(quality)


def describe(segment: Segment) -> str:
    """'in the clearly-real tier with no face and JPEG quality below 70'."""
    tier, face, jpeg = segment
    jpeg_words = {"none": "not a JPEG", "low": f"JPEG quality below {JPEG_SPLIT}",
                  "usual": f"JPEG quality {JPEG_SPLIT} or above"}[jpeg]
    return f"in the {TIER_WORDS.get(tier, tier)} tier {'with a face' if face else 'with no face'} and {jpeg_words}"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (95 % by default)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class ReliabilityLine:
    """The statement for one verdict; ``rate`` is None below the minimum."""

    segment: Segment
    n: int
    overturned: int
    min_labels: int = MIN_LABELS

    @property
    def enough(self) -> bool:
        return self.n >= self.min_labels

    @property
    def rate(self) -> float | None:
        return self.overturned / self.n if self.enough else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson(self.overturned, self.n) if self.enough else None

    @property
    def text(self) -> str:
        where = describe(self.segment)
        if not self.enough:
            have = "no labelled items" if self.n == 0 else f"only {self.n} labelled item{'s' * (self.n != 1)}"
            return (f"Too few labels to say how reliable this verdict is: {have} {where} "
                    f"(a rate needs at least {self.min_labels}).")
        lo, hi = self.interval
        return (f"On {self.n} labelled items {where}, reviewers overturned {self.rate:.0%} "
                f"(95 % CI {lo:.0%}–{hi:.0%}).")

    def to_json(self) -> dict[str, Any]:
        tier, face, jpeg = self.segment
        return {"segment": {"tier": tier, "face": face, "jpeg": jpeg}, "n": self.n, "overturned": self.overturned,
                "rate": self.rate, "interval": list(self.interval) if self.interval else None,
                "enough": self.enough, "min_labels": self.min_labels, "text": self.text}


@dataclass
class SegmentTable:
    """Labelled and overturned counts per segment, read once from the store."""

    counts: dict[Segment, list[int]] = field(default_factory=dict)  #: segment → [labelled, overturned]
    min_labels: int = MIN_LABELS

    @classmethod
    def from_store(cls, store: "ReviewStore", *, model_sha256: str | None = None,
                   min_labels: int = MIN_LABELS) -> "SegmentTable":
        """Count every real/fake label in force (optionally only on scorings by ``model_sha256``)."""
        table = cls(min_labels=min_labels)
        for row in store.labels_with_scorings():  # one query, whatever the store's size
            if row.get("label") not in ("real", "fake") or row.get("scoring_id") is None:
                continue
            if model_sha256 and row.get("model_sha256") != model_sha256:
                continue
            verdict = model_verdict(row.get("tier"), row.get("probability"))
            if verdict is None:
                continue
            seg = segment_of(row["tier"], row.get("guardrails"))
            counts = table.counts.setdefault(seg, [0, 0])
            counts[0] += 1
            counts[1] += verdict != row["label"]
        return table

    def line(self, tier: str, guardrails: Mapping[str, Any] | None) -> ReliabilityLine:
        seg = segment_of(tier, guardrails)
        n, k = self.counts.get(seg, [0, 0])
        return ReliabilityLine(segment=seg, n=n, overturned=k, min_labels=self.min_labels)

    @property
    def total(self) -> int:
        return sum(c[0] for c in self.counts.values())


def reliability_line(store: "ReviewStore", tier: str, guardrails: Mapping[str, Any] | None, *,
                     model_sha256: str | None = None, min_labels: int = MIN_LABELS) -> ReliabilityLine:
    """The line for one verdict (reads the whole label record; cache :class:`SegmentTable` for many)."""
    return SegmentTable.from_store(store, model_sha256=model_sha256, min_labels=min_labels).line(tier, guardrails)

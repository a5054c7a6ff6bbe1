"""Blind double review: which items get a second reviewer, and how far reviewers agree.

Why: calibration, adaptation and every export learn from reviewer labels, so
nobody can trust them without knowing how reliable those labels are. A share
of items (and every item whose first label overturned a clear model verdict)
goes to a second reviewer who does not see the first label; disagreements go
to a third, adjudicating label. Cohen's κ per reviewer pair and overall says
how much of the agreement is beyond chance.

The selection is a pure function of the item's hash, so every process and
every replay of the same labels makes the same choice.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

#: Share of first labels that get a blind second review by default.
DEFAULT_SECOND_REVIEW_SHARE = 0.10
#: Labels that take part in agreement (``unsure`` is a label too: two reviewers can agree on it).
KAPPA_LABELS = ("real", "fake", "unsure")
#: Agreement states an exported label carries.
AGREEMENT_STATES = ("single", "pending_second", "agreed", "pending_adjudication", "adjudicated")


def second_review_share_setting(value: float | None | str = "env") -> float | None:
    """The share in force: a number in [0, 1], None for "double review off", or "env" to read
    ``$LADEDA_SECOND_REVIEW_SHARE`` ("off" or a number; default :data:`DEFAULT_SECOND_REVIEW_SHARE`)."""
    import os

    if value == "env":
        value = os.environ.get("LADEDA_SECOND_REVIEW_SHARE", str(DEFAULT_SECOND_REVIEW_SHARE))
    if value is None or str(value).strip().lower() in ("off", "none", ""):
        return None
    try:
        share = float(value)
    except (TypeError, ValueError):
        share = -1.0
    if not 0.0 <= share <= 1.0:
        from core.errors import InvalidArgumentError

        raise InvalidArgumentError(f"The second-review share must be between 0 and 1 (or 'off'), got {value!r}.")
    return share


def agreement_state(stage: str | None, queue_state: str | None, labelled: bool) -> str | None:
    """An item's place in double review, from its queue stage and state; None when it has no label."""
    if not labelled:
        return None
    stage = stage or "first"
    waiting = queue_state in ("queued", "leased")
    if stage == "first":
        return "single"
    if stage == "second":
        return "pending_second" if waiting else "agreed"
    return "pending_adjudication" if waiting else "adjudicated"


def labels_hidden_from(item: Mapping[str, Any] | None, reviewer: str | None) -> bool:
    """Whether ``reviewer`` must not see the item's earlier labels: it waits for a blind second review
    or an adjudication that ``reviewer`` may be the one to give (they have not labelled it). Every
    view of an item (its review state, similar reviewed items) asks this one rule."""
    if not item or item.get("agreement_state") not in ("pending_second", "pending_adjudication"):
        return False
    return not any(e.get("reviewer") == reviewer for e in item.get("label_events") or [])


def overturns(model_tier: str | None, label: str) -> bool:
    """True when a reviewer's label contradicts a clear model verdict (clearly real called fake, or back)."""
    return (model_tier == "real" and label == "fake") or (model_tier == "fake" and label == "real")


def sampled_for_second_review(sha256: str, share: float = DEFAULT_SECOND_REVIEW_SHARE) -> bool:
    """Deterministic ``share`` of items, chosen by their hash (the same answer in every process)."""
    if share <= 0:
        return False
    if share >= 1:
        return True
    return int(sha256[:8], 16) / 0x1_0000_0000 < share


def second_review_reason(sha256: str, model_tier: str | None, label: str,
                         share: float = DEFAULT_SECOND_REVIEW_SHARE) -> str | None:
    """Why this first label needs a blind second review, or None when it does not."""
    if overturns(model_tier, label):
        return f"second review: the first label ({label}) overturned the model's clear '{model_tier}' verdict"
    if sampled_for_second_review(sha256, share):
        return f"second review: drawn for the {share:.0%} quality sample"
    return None


def cohen_kappa(a: Sequence[str], b: Sequence[str], labels: Sequence[str] = KAPPA_LABELS) -> float | None:
    """Cohen's κ of two raters over the same items; None when undefined (no items, or chance agreement 1)."""
    if len(a) != len(b):
        raise ValueError("both raters need one label per item")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in set(labels) | set(ca) | set(cb)) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


@dataclass(frozen=True)
class PairAgreement:
    reviewers: tuple[str, str]
    n: int
    agreement: float
    kappa: float | None

    def to_json(self) -> dict[str, Any]:
        return {"reviewers": list(self.reviewers), "n": self.n, "agreement": round(self.agreement, 4),
                "kappa": None if self.kappa is None else round(self.kappa, 4)}


def first_two_labels(events: Iterable[Mapping[str, Any]]) -> dict[str, tuple[tuple[str, str], tuple[str, str]]]:
    """Per item, the first labels of its first two distinct reviewers: ``{sha: ((rev1, lab1), (rev2, lab2))}``.

    ``events`` are label events in order (``sha256``, ``reviewer``, ``label``), undone ones already removed.
    """
    seen: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for e in events:
        got = seen[e["sha256"]]
        if len(got) < 2 and all(r != e["reviewer"] for r, _ in got):
            got.append((str(e["reviewer"]), str(e["label"])))
    return {sha: (got[0], got[1]) for sha, got in seen.items() if len(got) == 2}


def pair_agreements(events: Iterable[Mapping[str, Any]]) -> tuple[list[PairAgreement], PairAgreement | None]:
    """κ per reviewer pair (each pair's raters in name order) and overall (first vs second reviewer)."""
    pairs = first_two_labels(events)
    by_pair: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for (r1, l1), (r2, l2) in pairs.values():
        key, labs = ((r1, r2), (l1, l2)) if r1 <= r2 else ((r2, r1), (l2, l1))
        by_pair[key].append(labs)

    def summarise(who: tuple[str, str], rows: list[tuple[str, str]]) -> PairAgreement:
        a, b = [x for x, _ in rows], [y for _, y in rows]
        return PairAgreement(who, len(rows), sum(x == y for x, y in rows) / len(rows), cohen_kappa(a, b))

    per_pair = [summarise(k, v) for k, v in sorted(by_pair.items())]
    in_order = [(l1, l2) for (_, l1), (_, l2) in pairs.values()]
    return per_pair, (summarise(("first reviewer", "second reviewer"), in_order) if in_order else None)


def reviewer_vs_model(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Confusion counts of the label in force against the model's tier: ``{tier: {label: n}}``."""
    out: dict[str, dict[str, int]] = {t: {lab: 0 for lab in KAPPA_LABELS} for t in ("real", "review", "fake")}
    for r in rows:
        tier, label = r.get("tier"), r.get("label")
        if tier in out and label in out[tier]:
            out[tier][label] += 1
    return out

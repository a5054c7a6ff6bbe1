"""The one door for a reviewer's decision on a queued item: label, skip, release, undo, claim.

Why: the Review page, Inspect's "label now" and ``python -m core queue`` must
apply the same rules. Every call names the item it acts on (the sha of the
evidence the reviewer was looking at), never "whatever is current", so a
decision can only land on the item whose evidence was on screen. Undo puts
the reviewer back on the undone item and returns anything claimed meanwhile
(auto-next) to the queue, so nothing stays leased behind their back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import DetectorError

if TYPE_CHECKING:  # pragma: no cover
    from core.review.store import ReviewStore

LABELS = ("real", "fake", "unsure")


class DecisionError(DetectorError):
    """A decision that cannot be applied as asked (e.g. on an item no longer leased to the reviewer)."""

    code = "decision_error"


@dataclass
class Outcome:
    """What a decision did, in terms a page can show."""

    action: str  #: "label", "skip", "release", "undo", "claim"
    sha256: str | None
    name: str | None = None
    label: str | None = None
    queue_state: str | None = None
    released: list[dict[str, Any]] = field(default_factory=list)  #: items returned to the queue (sha256, name)
    next_sha256: str | None = None  #: the item the reviewer now holds, if any
    reason: str | None = None  #: why a claimed item was picked, when the store says

    @property
    def message(self) -> str:
        who = self.name or (self.sha256 or "")[:12]
        if self.action == "label":
            return f"Labelled {who} as {self.label}."
        if self.action == "skip":
            return f"Skipped {who}: it went to the back of the queue."
        if self.action == "release":
            return f"Released {who} back to the queue."
        if self.action == "undo":
            text = f"Undid '{self.label}' on {who} (now {self.queue_state})."
            if self.released:
                text += " Returned to the queue: " + ", ".join(r["name"] for r in self.released) + "."
            return text
        if self.action == "claim":
            return f"Claimed {who}." if self.sha256 else "The queue is empty."
        return self.action


def _name(store: "ReviewStore", sha256: str) -> str:
    try:
        return str(store.item(sha256).get("name") or sha256[:12])
    except DetectorError:
        return sha256[:12]


def _state(store: "ReviewStore", sha256: str) -> str | None:
    return ((store.item(sha256) or {}).get("queue") or {}).get("state")


def holds(store: "ReviewStore", sha256: str, reviewer: str) -> bool:
    """True when ``reviewer`` holds the lease on ``sha256`` now."""
    q = (store.item(sha256) or {}).get("queue") or {}
    return q.get("state") == "leased" and q.get("lease_reviewer") == reviewer


def claim(store: "ReviewStore", reviewer: str) -> Outcome:
    """The next item for ``reviewer`` (most uncertain first); ``sha256`` None when the queue is empty."""
    item = store.claim_next(reviewer)
    if item is None:
        return Outcome("claim", None)
    return Outcome("claim", item["sha256"], name=item.get("name"), queue_state="leased",
                   next_sha256=item["sha256"], reason=item.get("claim_reason") or item.get("reason"))


def label(store: "ReviewStore", sha256: str, value: str, reviewer: str, *, note: str | None = None,
          seconds_spent: float | None = None, authenticated: bool = False, leased: bool = False,
          learn: Any = None) -> Outcome:
    """Label the item whose evidence the reviewer saw. ``leased``: refuse unless the reviewer holds
    it (the Review page), so a stale page cannot label an item someone else has taken over.

    ``learn``: after the label, let the background learner check whether N new labels arrived
    (:func:`core.learning.background.maybe_learn`; ``True`` with the default model registry, or a
    registry). It returns at once; the learning itself runs on its own thread."""
    if value not in LABELS:
        raise DecisionError(f"Unknown label {value!r}; choose one of {', '.join(LABELS)}.")
    if leased and not holds(store, sha256, reviewer):
        raise DecisionError(f"{_name(store, sha256)} is no longer leased to you (state: {_state(store, sha256)}); "
                            "nothing was labelled.")
    kwargs = {"note": note or None}
    if seconds_spent is not None:
        kwargs["seconds_spent"] = seconds_spent
    kwargs["authenticated"] = authenticated
    store.label(sha256, value, reviewer, **kwargs)
    if learn is not None and learn is not False:
        from core.learning.background import maybe_learn

        maybe_learn(store, None if learn is True else learn)
    return Outcome("label", sha256, name=_name(store, sha256), label=value, queue_state=_state(store, sha256))


def skip(store: "ReviewStore", sha256: str, reviewer: str) -> Outcome:
    store.skip(sha256, reviewer)
    return Outcome("skip", sha256, name=_name(store, sha256), queue_state=_state(store, sha256))


def release(store: "ReviewStore", sha256: str, reviewer: str) -> Outcome:
    store.release(sha256, reviewer)
    return Outcome("release", sha256, name=_name(store, sha256), queue_state=_state(store, sha256))


def undo(store: "ReviewStore", reviewer: str) -> Outcome:
    """Undo ``reviewer``'s latest label; items they claimed meanwhile go back to the queue."""
    res = store.undo_last(reviewer)
    sha = res["undone"]["sha256"]
    released = []
    for lease in store.leases(reviewer):
        other = lease["sha256"]
        if other != sha:
            store.release(other, reviewer)
            released.append({"sha256": other, "name": _name(store, other)})
    state = res.get("queue_state") or _state(store, sha)
    return Outcome("undo", sha, name=_name(store, sha), label=res["undone"].get("label"), queue_state=state,
                   released=released, next_sha256=sha if state == "leased" else None)

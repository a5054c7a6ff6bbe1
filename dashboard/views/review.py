"""Review: claim the most uncertain queued item, see its stored evidence (the image beside the
verdict, as on Inspect), decide real / fake / unsure (or skip) with a note, undo the last
decision. The lease is shown and renewed while the item is open.

One item at a time: the evidence comes from the store (no model pass), the
decision buttons are drawn only after that item's evidence and carry its sha
in their callbacks, and the item's name is drawn with them, so a reviewer
can never see one item's evidence under another item's buttons. Decisions go
through ``core.review.actions.decide`` (the same rules as the command line).
"""
from __future__ import annotations

import datetime as _dt
import time

import streamlit as st

from core.imageio import decode_image
from core.review import agreement, clip_maps
from core.review.actions import decide, submit as submit_mod
from dashboard import forensics_panels, learning_panels, services, widgets

PAGE = "review"
KEY = "review_current"  # {"sha": ..., "claimed_at": epoch seconds}

# Title and counts share one row, and a decision's confirmation is one line, so the item's picture
# starts high enough to be seen beside its verdict at 1280×800.
title, *c = st.columns([3, 1, 1, 1], vertical_alignment="bottom")
title.title("Review queue")
store = services.store()
who = services.require_identity()
active = st.session_state.get("active_detector")
det = active.detector if active is not None else None

stats = store.queue_stats()
c[0].metric("Queued", stats.get("queued", 0))
c[1].metric("Being reviewed", stats.get("leased", 0))
c[2].metric("Labelled", stats.get("labelled", 0))
learning_panels.learned_line(store, services.registry(), key="review-learned")
if who is None:
    st.stop()


def _set_current(sha: str | None) -> None:
    if sha is None:
        st.session_state.pop(KEY, None)
    else:
        st.session_state[KEY] = {"sha": sha, "claimed_at": time.time()}


def _claim() -> None:
    ok, out = services.act(PAGE, "claiming the next item", decide.claim, store, who.name)
    if ok and out.sha256:
        _set_current(out.sha256)
    elif ok:
        _set_current(None)
        services.flash("info", "The queue is empty.", PAGE)


def _undo(*_args: str) -> None:
    ok, out = services.act(PAGE, "undoing your last decision", decide.undo, store, who.name)
    if ok:
        services.flash("success", out.message, PAGE)
        _set_current(out.next_sha256)


def _after_decision() -> None:
    _set_current(None)
    if st.session_state.get("review-auto-next", True):
        _claim()


def _label(sha: str, value: str, note: str) -> None:
    current = st.session_state.get(KEY) or {}
    spent = max(0.0, time.time() - current["claimed_at"]) if current.get("sha") == sha else None
    ok, out = services.act(PAGE, "saving your decision", decide.label, store, sha, value, who.name,
                           note=note or None, seconds_spent=spent, authenticated=who.authenticated, leased=True,
                           learn=services.registry())
    if ok:
        services.flash("success", out.message, PAGE)
        _after_decision()


def _skip(sha: str, _note: str) -> None:
    ok, out = services.act(PAGE, "skipping", decide.skip, store, sha, who.name)
    if ok:
        services.flash("success", out.message, PAGE)
        _after_decision()


def _release(sha: str, _note: str) -> None:
    ok, out = services.act(PAGE, "releasing the item", decide.release, store, sha, who.name)
    if ok:
        services.flash("success", out.message, PAGE)
    _set_current(None)


def _rescore(sha: str) -> None:
    services.act(PAGE, "re-scoring with the active model", submit_mod.rescore, det, store, sha,
                 uploader=who.name, authenticated=who.authenticated,
                 success="Re-scored with the active model.")


current = st.session_state.get(KEY)
if current is None:  # resume an item this reviewer still holds (page reload, new tab)
    mine = store.leases(who.name)
    if mine:
        _set_current(mine[0]["sha256"])
        current = st.session_state[KEY]

services.show_flashes(PAGE, compact=True)
st.toggle("Claim the next item after each decision", value=True, key="review-auto-next")


def _recent_decisions() -> None:
    history = store.label_history(reviewer=who.name, limit=10)
    if not history:
        return
    st.markdown("**Your recent decisions**")
    rows = []
    for h in history:
        rows.append({"image": widgets.stored_thumbnail(store, h["sha256"]), "file": h.get("name") or h["sha256"][:12],
                     "kind": h["kind"], "label": h["label"], "note": h["note"], "at": h["created_at"]})
    st.dataframe(rows, hide_index=True, key="review-history",
                 column_config={"image": st.column_config.ImageColumn("image", width="small")})


if current is None:
    b1, b2, _ = st.columns([1, 1, 3])
    b1.button("Claim next", shortcut="N", type="primary", key="review-claim", width="stretch", on_click=_claim)
    b2.button("Undo last", shortcut="Z", key="review-undo-idle", width="stretch", on_click=_undo)
    _recent_decisions()
    st.stop()

sha = current["sha"]
item = store.item(sha)
queue = item.get("queue") or {}
if queue.get("state") != "leased" or queue.get("lease_reviewer") != who.name:
    st.warning(f"{item.get('name') or sha[:12]} is no longer leased to you (state: {queue.get('state')}).")
    _set_current(None)
    st.button("Back to the queue", key="review-back")
    st.stop()


@st.fragment(run_every=30)
def lease_box(sha: str, reviewer: str) -> None:
    """Show the lease and renew it once less than half of it is left (checked every 30 s while open)."""
    with services.guarded("renewing your lease"):
        row = next((r for r in store.leases(reviewer) if r["sha256"] == sha), None)  # one small query
        if row is None:
            st.warning("Your lease on this item has ended; reload the page to continue.")
            return
        expires = _dt.datetime.fromisoformat(row["lease_expires_at"].replace("Z", "+00:00"))
        left = (expires - store.now()).total_seconds()
        if left < store.lease_seconds / 2:
            expires = _dt.datetime.fromisoformat(store.renew_lease(sha, reviewer).replace("Z", "+00:00"))
            left = (expires - store.now()).total_seconds()
        st.caption(f":material/lock_clock: Leased to you until {expires:%H:%M:%S} UTC "
                   f"({left / 60:.0f} min left; renewed automatically while this item is open)")


# The item's name, lease and decision buttons are drawn only after its evidence: until then their
# places are empty, so nothing of this item appears above another item's (stale) evidence.
t0 = time.perf_counter()
head = st.empty()
left, right = st.columns([3, 2], gap="medium")
with right:
    verdict_slot = st.empty()
    actions_slot = st.empty()

ev, stale = submit_mod.evidence_for(store, det, sha)
data = store.image_bytes(sha)
image = decoded = None
if data is not None:
    with services.guarded("opening the image", where=left):
        decoded = det.decode(data) if det is not None else decode_image(data)
        image = decoded.image
if ev is None and data is not None and det is not None:  # queued without evidence (older versions, CLI)
    with services.guarded("computing the evidence", where=verdict_slot):
        with verdict_slot.container():
            with st.spinner("This item has no stored evidence yet: scoring it once with the active model…"):
                submit_mod.rescore(det, store, sha, uploader=who.name, authenticated=who.authenticated)
        ev, stale = submit_mod.evidence_for(store, det, sha)

if ev is None:
    with verdict_slot.container():
        st.warning("No evidence is stored for this item and it cannot be computed (no image bytes or no model); "
                   "decide from the stored scoring.")
        st.json(item.get("latest_scoring") or {})
else:
    note = None
    if stale:
        note = (f"Scored by model `{ev.model_sha256[:12]}` ({ev.model_label}, calibration "
                f"{ev.calibration_version or 'none'}), not the active one.")
    with verdict_slot.container():
        widgets.verdict_card(ev, key="review", stale_note=note)
        if stale and det is not None and data is not None:
            st.button("Re-score with the active model", key=f"review-rescore-{sha[:12]}", on_click=_rescore,
                      args=(sha,), icon=":material/refresh:")
    with left:
        widgets.image_view(ev, image, key="review",
                           clip_map=lambda compute: clip_maps.clip_map(det, store, ev, image, compute=compute))
if item.get("storage") == "thumbnail":
    right.info("Privacy mode: only a thumbnail is stored; the picture shown is the thumbnail.")
render_ms = (time.perf_counter() - t0) * 1e3

with head.container(key="review-item-head"):
    st.subheader(item["name"])
    st.caption(f"SHA-256 `{sha}` · queued because: {queue.get('reason') or '—'} · uploaded {item['uploaded_at']}")
    stage = queue.get("stage") or "first"
    if stage == "second":
        st.info("Blind second review: another reviewer labelled this item; decide on your own, their label "
                "is hidden until you have.", icon=":material/visibility_off:")
    elif stage == "adjudication":
        earlier = [e for e in item.get("label_events") or [] if e.get("kind") == "label"]
        st.warning("Adjudication: the first two reviewers disagreed — " + "; ".join(
            f"{e['reviewer']} said {e['label']}" + (f" ({e['note']})" if e.get("note") else "") for e in earlier[-2:])
            + ". Your label is final.", icon=":material/gavel:")
with actions_slot.container(border=True, key="review-actions"):
    lease_box(sha, who.name)
    widgets.label_controls(key=f"review-{sha[:12]}", on_label=_label, args=(sha,), shortcuts=True,
                           extra=[("skip", "Skip", "S", _skip), ("release", "Release", None, _release),
                                  ("undo", "Undo last", "Z", _undo)])
if ev is not None:
    if det is not None and decoded is not None:
        _fx = st.session_state.setdefault("review-forensics-extras", {})
        if _fx.get("sha") != sha:
            _fx.clear()
            _fx["sha"] = sha
        subject = widgets.forensics_subject(ev, decoded, extras=_fx)
        forensics_panels.verdict_extras(subject, det, store, who, key="review", folded=True)
        learning_panels.similar_items_panel(store, sha, decoded.image, key="review",
                                            hide_own_label=agreement.labels_hidden_from(item, who.name))
    widgets.details(ev, image, key="review", render_ms=render_ms)
with st.container(key=f"review-evidence-done-{sha[:12]}"):  # marker for the browser benchmark
    st.caption(f"Evidence of {item['name']} shown.")

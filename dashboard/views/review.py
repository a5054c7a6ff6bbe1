"""Review: claim the most uncertain queued item, see the same evidence as
Inspect, decide real / fake / unsure (or skip) with a note, undo the last
decision. The lease is shown and renewed while the item is open.

Buttons act in callbacks (before the page is drawn again), so what is shown
is always the state after the action."""
from __future__ import annotations

import datetime as _dt
import time

import streamlit as st

from dashboard import services, widgets

PAGE = "review"
KEY = "review_current"  # {"sha": ..., "claimed_at": epoch seconds}

st.title("Review queue")
store = services.store()
who = services.require_identity()

stats = store.queue_stats()
c = st.columns(3)
c[0].metric("Queued", stats.get("queued", 0))
c[1].metric("Being reviewed", stats.get("leased", 0))
c[2].metric("Labelled", stats.get("labelled", 0))
if who is None:
    st.stop()


def _set_current(sha: str | None) -> None:
    if sha is None:
        st.session_state.pop(KEY, None)
    else:
        st.session_state[KEY] = {"sha": sha, "claimed_at": time.time()}


def _claim() -> None:
    ok, item = services.act(PAGE, "claiming the next item", store.claim_next, who.name)
    if ok and item is not None:
        _set_current(item["sha256"])
    elif ok:
        services.flash("info", "The queue is empty.", PAGE)


def _undo(_note: str = "") -> None:
    ok, res = services.act(PAGE, "undoing your last decision", store.undo_last, who.name)
    if ok:
        sha = res["undone"]["sha256"]
        services.flash("success", f"Undid '{res['undone']['label']}' on {sha[:12]}… (now {res['queue_state']}).", PAGE)
        if res.get("queue_state") == "leased":
            _set_current(sha)


def _after_decision() -> None:
    _set_current(None)
    if st.session_state.get("review-auto-next", True):
        _claim()


def _label(value: str, note: str) -> None:
    current = st.session_state.get(KEY)
    if not current:
        return
    spent = max(0.0, time.time() - current["claimed_at"])
    ok, _ = services.act(PAGE, "saving your decision", store.label, current["sha"], value, who.name,
                         note=note or None, seconds_spent=spent, success=f"Labelled as {value}.")
    if ok:
        _after_decision()


def _skip(_note: str) -> None:
    current = st.session_state.get(KEY)
    if current:
        ok, _ = services.act(PAGE, "skipping", store.skip, current["sha"], who.name,
                             success="Skipped: the item went to the back of the queue.")
        if ok:
            _after_decision()


def _release(_note: str) -> None:
    current = st.session_state.get(KEY)
    if current:
        services.act(PAGE, "releasing the item", store.release, current["sha"], who.name,
                     success="Released the item back to the queue.")
        _set_current(None)


current = st.session_state.get(KEY)
if current is None:  # resume an item this reviewer still holds (page reload, new tab)
    mine = store.leases(who.name)
    if mine:
        _set_current(mine[0]["sha256"])
        current = st.session_state[KEY]

services.show_flashes(PAGE)
st.toggle("Claim the next item after each decision", value=True, key="review-auto-next")

if current is None:
    b1, b2, _ = st.columns([1, 1, 3])
    b1.button("Claim next", shortcut="N", type="primary", key="review-claim", width="stretch", on_click=_claim)
    b2.button("Undo last", shortcut="Z", key="review-undo-idle", width="stretch", on_click=_undo)
    history = store.label_history(reviewer=who.name, limit=10)
    if history:
        st.markdown("**Your recent decisions**")
        st.dataframe([{k: h[k] for k in ("created_at", "kind", "label", "sha256", "note")} for h in history],
                     hide_index=True)
    st.stop()

sha = current["sha"]
item = store.item(sha)
queue = item.get("queue") or {}
if queue.get("state") != "leased" or queue.get("lease_reviewer") != who.name:
    st.warning(f"Item {sha[:12]}… is no longer leased to you (state: {queue.get('state')}).")
    _set_current(None)
    st.button("Back to the queue", key="review-back")
    st.stop()


@st.fragment(run_every=30)
def lease_box(sha: str, reviewer: str) -> None:
    """Show the lease and renew it once less than half of it is left (checked every 30 s while open)."""
    with services.guarded("renewing your lease"):
        row = store.item(sha).get("queue") or {}
        if row.get("state") != "leased" or row.get("lease_reviewer") != reviewer:
            st.warning("Your lease on this item has ended; reload the page to continue.")
            return
        expires = _dt.datetime.fromisoformat(row["lease_expires_at"].replace("Z", "+00:00"))
        left = (expires - store.now()).total_seconds()
        if left < store.lease_seconds / 2:
            expires = _dt.datetime.fromisoformat(store.renew_lease(sha, reviewer).replace("Z", "+00:00"))
            left = (expires - store.now()).total_seconds()
        st.caption(f":material/lock_clock: Leased to you until {expires:%H:%M:%S} UTC "
                   f"({left / 60:.0f} min left; renewed automatically while this item is open)")


st.subheader(item["name"])
st.caption(f"SHA-256 `{sha}` · queued because: {queue.get('reason') or '—'} · uploaded {item['uploaded_at']}")
lease_box(sha, who.name)

with st.container(border=True, key="review-actions"):
    widgets.label_controls(key=f"review-{sha[:12]}", on_label=_label, shortcuts=True,
                           extra=[("skip", "Skip", "S", _skip), ("release", "Release", None, _release),
                                  ("undo", "Undo last", "Z", _undo)])

active = st.session_state.get("active_detector")
data = store.image_bytes(sha)
if item.get("storage") == "thumbnail":
    st.info("Privacy mode: only a thumbnail is stored, so the evidence below is computed on the thumbnail.")
if data is None:
    st.warning("The image bytes are not stored for this item; decide from the stored scoring.")
    st.json(item.get("latest_scoring") or {})
elif active is None:
    st.info("No model is loaded, so the evidence cannot be computed; the sidebar says why.")
else:
    det = active.detector
    ev = None
    with services.guarded("analysing the image"):
        ev = widgets.analyse(det, data, item["name"], sha)
    if ev is not None:
        widgets.verdict_card(ev, det, key="review")
        from dashboard import forensics_panels; forensics_panels.verdict_extras(ev, det, store, who, key="review")  # noqa: E702
        stored = item.get("latest_scoring") or {}
        if stored and stored.get("model_sha256") != det.checkpoint.sha256:
            st.caption(f"When queued it was scored by model `{(stored.get('model_sha256') or '')[:12]}`: "
                       f"P(fake) {stored.get('probability', float('nan')):.1%}, tier {stored.get('tier')}.")
        widgets.evidence(ev, det, key="review", gradcam=st.toggle("GradCAM", value=True, key="review-gradcam"))

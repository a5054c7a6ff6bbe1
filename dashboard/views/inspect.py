"""Inspect: upload one image and see it beside its verdict, then the rest of the evidence;
send it to review or label it now.

The upload goes through ``core.review.actions.submit`` (the same door as the
command line): the verdict is drawn after decode and one model pass; faces,
quality and metadata fill in right after and may move the tier to review;
the scoring and its evidence are then stored, so a re-upload of the same
bytes is answered from the store without running the model.
"""
from __future__ import annotations

import time

import streamlit as st

from core.imageio import IMAGE_SUFFIXES, SUPPORTED_FORMATS
from core.review import agreement, clip_maps
from core.review.actions import decide, submit as submit_mod
from dashboard import forensics_panels, learning_panels, services, widgets

PAGE = "inspect"
STATE = "inspect-current"  # {"file_id", "model", "sub"}
#: What the uploader accepts: every suffix the decoder reads (a multi-image file: the first image is analysed).
UPLOAD_TYPES = sorted(s.lstrip(".") for s in IMAGE_SUFFIXES)

st.title("Inspect an image")
active = st.session_state.get("active_detector")
if active is None:
    st.info("No model is loaded, so nothing can be scored; the sidebar says why.", icon=":material/block:")
    st.stop()
det = active.detector
store = services.store()
who = services.identity()


def _new_upload() -> None:
    """A new file replaces the previous one's result, error and messages."""
    st.session_state.pop(STATE, None)
    st.session_state.get("_flash", {}).pop(PAGE, None)


upload = st.file_uploader(f"Upload an image ({SUPPORTED_FORMATS})", type=UPLOAD_TYPES,
                          key="inspect-upload", on_change=_new_upload)
if upload is None:
    st.caption("The image is scored by the model in the sidebar; nothing is stored until the analysis succeeds.")
    st.stop()

model_sha = det.checkpoint.sha256 or ""
cur = st.session_state.get(STATE)
if cur is not None and (cur["file_id"] != upload.file_id or cur["model"] != model_sha):
    cur = None
left, right = st.columns([3, 2], gap="medium")
with left:
    image_slot = st.empty()  # the picture first; the maps once LaDeDa's pass is in
with right:
    verdict_slot = st.empty()
    status = st.empty()
sub = cur["sub"] if cur else None
if sub is None:
    def _waiting(ahead: int) -> None:
        status.info(f"Waiting for the model: {ahead} analysis{'es' if ahead != 1 else ''} ahead of yours "
                    "(several analysts are scoring at once).", icon=":material/schedule:")

    with services.guarded("analysing the image", where=status):
        with st.spinner("Scoring the image…"):
            sub = submit_mod.submit(det, upload.getvalue(), upload.name, store, who.name if who else None,
                                    bool(who and who.authenticated), defer=True, on_wait=_waiting)
    if sub is None:
        st.stop()
    status.empty()
    st.session_state[STATE] = {"file_id": upload.file_id, "model": model_sha, "sub": sub}

image = sub.decoded.image if sub.decoded is not None else None


def _image_view() -> None:
    with image_slot.container():
        widgets.image_view(sub.evidence, image, key="inspect",
                           clip_map=lambda compute: clip_maps.clip_map(det, store, sub.evidence, image,
                                                                       compute=compute))
        if sub.decoded is not None and sub.decoded.frames_note:
            st.caption(f":material/burst_mode: {sub.decoded.frames_note}")


with verdict_slot.container():  # provisional until the second phase ran (its own key: keys are unique per run)
    widgets.verdict_card(sub.evidence, key="inspect-provisional" if sub.pending else "inspect", pending=sub.pending)
maps_drawn = sub.evidence.has_patch_map
if maps_drawn:
    _image_view()
elif image is not None:  # CLIP gave the verdict first: the picture now, LaDeDa's maps when its pass is in
    with image_slot.container():
        widgets.plain_picture(image, caption=f"{sub.name}: LaDeDa's local traces are being computed…")

if sub.pending:  # second pass: LaDeDa (when CLIP looked first), guardrails, final tier, record, store the evidence
    with services.guarded("reading LaDeDa's local traces and checking faces, quality and metadata", where=status), \
            right, st.spinner("Reading LaDeDa's local traces, faces, quality and metadata…"):
        sub = submit_mod.finish(det, sub, store, uploader=who.name if who else None,
                                authenticated=bool(who and who.authenticated),
                                on_wait=lambda n: status.caption(f"Waiting for the model: {n} ahead…"))
        st.session_state[STATE]["sub"] = sub
    if sub.pending:  # the second phase failed: its message stays on screen, nothing provisional is kept
        st.session_state.pop(STATE, None)
        verdict_slot.empty()
        st.stop()
    status.empty()
    with verdict_slot.container():
        widgets.verdict_card(sub.evidence, key="inspect", pending=sub.pending)
if not maps_drawn and not sub.pending:
    _image_view()
with right:
    if sub.provisional_tier and not sub.pending and sub.provisional_tier != sub.evidence.tier:
        st.warning(f"The provisional verdict was **{widgets.tier_text(sub.provisional_tier)}**; with LaDeDa's "
                   f"local traces and the guardrails in, it is **{widgets.tier_text(sub.evidence.tier)}**.",
                   icon=":material/change_circle:")
sha = sub.sha256
_fx = st.session_state.setdefault("inspect-forensics-extras", {}).setdefault(sha, {})
subject = widgets.forensics_subject(sub.evidence, sub.decoded, sub.analysis, extras=_fx)
forensics_panels.verdict_extras(subject, det, store, who, key="inspect")
item = store.item(sha) if sub.recorded else None
labels_hidden = agreement.labels_hidden_from(item, who.name if who else None)  # blind double review
learning_panels.similar_items_panel(store, sha, sub.decoded.image, key="inspect", hide_own_label=labels_hidden)


def _send_to_review(sha: str) -> None:
    ok, row = services.act(PAGE, "queueing the image", store.enqueue, sha, by=who.name, reason="sent from Inspect")
    if ok:
        services.flash("success", f"Queued for review (state: {row['state']}).", PAGE)


def _label_now(sha: str, value: str, note: str) -> None:
    ok, out = services.act(PAGE, "saving your label", decide.label, store, sha, value, who.name,
                           note=note or None, authenticated=who.authenticated, learn=services.registry())
    if ok:
        services.flash("success", out.message, PAGE)


with right:
    if sub.reused:
        st.caption(":material/inventory_2: Already scored by this model: shown from the store, no model run.")
    with st.container(border=True, key="inspect-actions"):
        services.show_flashes(PAGE)
        if who is None:
            st.caption("Enter your name in the sidebar to send this image to review or label it.")
        elif not sub.recorded:
            st.caption("The scoring was not saved, so it cannot be queued or labelled yet.")
        else:
            state = (item.get("queue") or {}).get("state")
            label = item.get("current_label")
            if labels_hidden:  # a possible next reviewer must not see earlier labels
                label = None
                state = f"{state}, waiting for an independent {item.get('review_stage')} review"
            st.caption(f"Review state: {state or 'not queued'}"
                       + (f" · labelled {label['label']} by {label['reviewer']}" if label else ""))
            st.button("Send to review", key="inspect-send", on_click=_send_to_review, args=(sha,),
                      icon=":material/send:")
            widgets.label_controls(key=f"inspect-label-{sha[:12]}", on_label=_label_now, args=(sha,))

t0 = time.perf_counter()
widgets.details(sub.evidence, image, key="inspect")
with st.container(key="inspect-done"):  # a marker the browser test and benchmark wait for
    st.caption(f"Analysis of {upload.name} complete.")

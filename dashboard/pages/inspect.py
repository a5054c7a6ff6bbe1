"""Inspect: upload one image and see the verdict with all of its evidence,
then send it to review or label it now."""
from __future__ import annotations

import hashlib

import streamlit as st

from dashboard import services, widgets

#: What the uploader accepts (GIF: the first frame is analysed).
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"]

st.title("Inspect an image")
active = st.session_state.get("active_detector")
if active is None:
    st.stop()
det = active.detector
store = services.store()
who = services.identity()

c = st.columns([4, 1])
upload = c[0].file_uploader("Upload an image (JPEG, PNG, WebP, BMP, TIFF, GIF first frame)", type=UPLOAD_TYPES,
                            key="inspect-upload")
gradcam_on = c[1].toggle("GradCAM", value=True, key="inspect-gradcam",
                         help="GradCAM needs a backward pass through the network; turn it off for speed.")
if upload is None:
    st.caption("The image is scored by the model in the sidebar; nothing is stored until the analysis succeeds.")
    st.stop()

data = upload.getvalue()
sha = hashlib.sha256(data).hexdigest()
ev = None
with services.guarded("analysing the image"):
    ev = widgets.analyse(det, data, upload.name, sha)
if ev is None:
    st.stop()

widgets.verdict_card(ev, det, key="inspect")

recorded = st.session_state.setdefault("inspect-recorded", set())
if (sha, ev.model_sha256) not in recorded:
    with services.guarded("saving the scoring"):
        services.record_analysis(store, ev.analysis, data, upload.name, who)
        recorded.add((sha, ev.model_sha256))


def _send_to_review() -> None:
    with services.guarded("queueing the image"):
        row = store.enqueue(sha, by=who.name, reason="sent from Inspect")
        st.session_state["inspect-flash"] = f"Queued for review (state: {row['state']})."


def _label_now(value: str, note: str) -> None:
    with services.guarded("saving your label"):
        store.label(sha, value, who.name, note=note or None)
        st.session_state["inspect-flash"] = f"Labelled as {value}."


with st.container(border=True, key="inspect-actions"):
    flash = st.session_state.pop("inspect-flash", None)
    if flash:
        st.success(flash)
    if who is None:
        st.caption("Enter your name in the sidebar to send this image to review or label it.")
    else:
        state = (store.item(sha).get("queue") or {}).get("state")
        st.caption(f"Review state: {state or 'not queued'}")
        a, b = st.columns([1, 4])
        if a.button("Send to review", key="inspect-send", width="stretch"):
            _send_to_review()
            st.rerun()
        with b:
            def _on_label(value: str, note: str) -> None:
                _label_now(value, note)
                st.rerun()

            widgets.label_controls(key=f"inspect-label-{sha[:12]}", on_label=_on_label)

widgets.evidence(ev, det, key="inspect", gradcam=gradcam_on)

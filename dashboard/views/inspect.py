"""Inspect: upload one image and see the verdict with all of its evidence,
then send it to review or label it now."""
from __future__ import annotations

import hashlib

import streamlit as st

from dashboard import services, widgets

PAGE = "inspect"
#: What the uploader accepts (GIF: the first frame is analysed).
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"]

st.title("Inspect an image")
active = st.session_state.get("active_detector")
if active is None:
    st.info("No model is loaded, so nothing can be scored; the sidebar says why.", icon=":material/block:")
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
from dashboard import forensics_panels; forensics_panels.verdict_extras(ev, det, store, who, key="inspect")  # noqa: E402,E702

recorded = st.session_state.setdefault("inspect-recorded", set())
if (sha, ev.model_sha256) not in recorded:
    with services.guarded("saving the scoring"):
        services.record_analysis(store, ev.analysis, data, upload.name, who)
        recorded.add((sha, ev.model_sha256))


def _send_to_review() -> None:
    ok, row = services.act(PAGE, "queueing the image", store.enqueue, sha, by=who.name, reason="sent from Inspect")
    if ok:
        services.flash("success", f"Queued for review (state: {row['state']}).", PAGE)


def _label_now(value: str, note: str) -> None:
    services.act(PAGE, "saving your label", store.label, sha, value, who.name, note=note or None,
                 success=f"Labelled as {value}.")


with st.container(border=True, key="inspect-actions"):
    services.show_flashes(PAGE)
    if who is None:
        st.caption("Enter your name in the sidebar to send this image to review or label it.")
    else:
        item = store.item(sha)
        state = (item.get("queue") or {}).get("state")
        label = item.get("current_label")
        st.caption(f"Review state: {state or 'not queued'}"
                   + (f" · labelled {label['label']} by {label['reviewer']}" if label else ""))
        a, b = st.columns([1, 4])
        a.button("Send to review", key="inspect-send", width="stretch", on_click=_send_to_review)
        with b:
            widgets.label_controls(key=f"inspect-label-{sha[:12]}", on_label=_label_now)

widgets.evidence(ev, det, key="inspect", gradcam=gradcam_on)
with st.container(key="inspect-done"):  # a marker the browser test and benchmark wait for
    st.caption(f"Analysis of {upload.name} complete.")

"""Export: choose labelled items, preview counts and hard negatives, write the
recalibration CSV/JSONL and the hard-negative zip, and see past exports."""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

import streamlit as st

from dashboard import services

st.title("Export labelled batches")
store = services.store()
who = services.require_identity()
active = st.session_state.get("active_detector")

with st.container(border=True):
    st.markdown("**Filters**")
    c = st.columns(4)
    since = c[0].date_input("Labelled from", value=None, key="exp-since")
    until = c[1].date_input("Labelled up to (inclusive)", value=None, key="exp-until")
    reviewers = ["(anyone)"] + store.reviewers()
    reviewer = c[2].selectbox("Reviewer", reviewers, key="exp-reviewer")
    label = c[3].selectbox("Label", ["(any)", "real", "fake", "unsure"], key="exp-label")
    c = st.columns(3)
    model_choice = c[0].radio("Scores from", ["latest scoring (any model)", "the active model only"],
                              key="exp-model", disabled=active is None)
    only_new = c[1].checkbox("Only items not exported before", value=True, key="exp-only-new")
    include_all = c[2].checkbox("Zip every real/fake item (not only hard negatives)", value=False,
                                key="exp-include-all")

filters = {
    "since": since,
    "until": (until + _dt.timedelta(days=1)) if until else None,
    "reviewer": None if reviewer == "(anyone)" else reviewer,
    "label": None if label == "(any)" else label,
    "model_sha256": active.detector.checkpoint.sha256 if (active and model_choice.startswith("the active")) else None,
    "only_new": only_new,
}

preview = None
with services.guarded("previewing the export"):
    preview = store.export_preview(filters, include_all_reviewed=include_all)
if preview is None:
    st.stop()

counts = preview["counts"]
m = st.columns(6)
for col, (name, key) in zip(m, [("Items", "items"), ("Real", "real"), ("Fake", "fake"), ("Unsure", "unsure"),
                                ("Hard negatives", "hard_negatives"), ("Images in zip", "zip_items")]):
    col.metric(name, counts.get(key, 0))
if counts.get("unscored"):
    st.caption(f"{counts['unscored']} item(s) have no matching scoring; calibration will skip them.")

st.markdown("**Hard negatives** (the label contradicts the model)")
hard = preview["hard_negatives"]
if hard:
    st.dataframe([{"name": h["name"], "label": h["label"], "model tier": h["tier"], "P(fake)": h["probability"],
                   "reviewer": h["reviewer"], "labelled at": h["labelled_at"], "sha256": h["sha256"][:12]}
                  for h in hard], hide_index=True,
                 column_config={"P(fake)": st.column_config.NumberColumn(format="%.3f")})
else:
    st.caption("None in this selection.")

can_export = who is not None and counts.get("items", 0) > 0
if st.button("Create export", type="primary", key="exp-create", disabled=not can_export):
    with services.guarded("writing the export"):
        with st.spinner("Writing files…"):
            res = store.export_batch(services.exports_dir(), **filters, include_all_reviewed=include_all,
                                     exported_by=who.name)
        st.session_state["last_export"] = res
        st.success(f"Export {res['export_id']} written: {res['counts']['items']} item(s), "
                   f"{res['counts'].get('zip_images', 0)} image(s) in the zip.")
if who is None:
    st.caption("Exports are recorded with your name: enter it in the sidebar first.")


def _downloads(files: dict, key: str) -> None:
    cols = st.columns(3)
    for col, (kind, mime, text) in zip(cols, [("csv", "text/csv", "CSV"), ("jsonl", "application/jsonl", "JSONL"),
                                              ("zip", "application/zip", "ZIP (hard negatives)")]):
        info = files.get(kind) or {}
        path = Path(info.get("path", ""))
        if path.is_file():
            col.download_button(f"Download {text}", data=lambda p=path: p.read_bytes(), file_name=path.name, mime=mime,
                                key=f"{key}-{kind}", on_click="ignore", width="stretch")
        else:
            col.caption(f"{text}: file no longer on disk")


last = st.session_state.get("last_export")
if last:
    st.markdown(f"**Latest export:** `{last['export_id']}`")
    _downloads(last["files"], "exp-last")

st.subheader("Export history")
history = store.export_history(limit=50)
if not history:
    st.caption("No exports yet.")
else:
    st.dataframe([{"export": h["id"], "created at": h["created_at"], "by": h["exported_by"],
                   "items": h["counts"].get("items"), "hard negatives": h["counts"].get("hard_negatives"),
                   "repeat of": h.get("repeat_of"),
                   "filters": ", ".join(f"{k}={v}" for k, v in h["filters"].items() if v not in (None, False))}
                  for h in history], hide_index=True)
    pick = st.selectbox("Files of", [h["id"] for h in history], key="exp-history-pick")
    chosen = next(h for h in history if h["id"] == pick)
    _downloads(chosen["files"], f"exp-hist-{pick}")

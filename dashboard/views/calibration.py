"""Calibration: fit a logit → probability map on reviewed items (or a CSV),
compare reliability before and after, choose review thresholds with their
projected error rates, and save / activate / roll back model versions."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import streamlit as st

from core.calibration import calibrators as C
from core.evaluation import charts
from core.calibration import metrics
from core.calibration import tiers as T
from dashboard import services

PAGE = "calibration"
st.title("Calibration")
store = services.store()
registry = services.registry()
who = services.identity()
active = st.session_state.get("active_detector")
if active is None:
    st.info("No model is loaded; the sidebar says why.")
    st.stop()
det = active.detector


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------
def reviewed_data() -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(logits, labels) of real/fake-labelled items scored by these weights (any calibration of them)."""
    info = registry.active()
    same_weights = {info.base_sha256} | {v.sha256 for v in registry.versions() if v.base_sha256 == info.base_sha256}
    same_weights.add(det.checkpoint.sha256)
    rows = store.labelled_items(limit=None)
    kept, skipped = [], {"unsure": 0, "unscored": 0, "other model": 0}
    for r in rows:
        if r["label"] not in ("real", "fake"):
            skipped["unsure"] += 1
        elif r["logit"] is None:
            skipped["unscored"] += 1
        elif r["model_sha256"] not in same_weights:
            skipped["other model"] += 1
        else:
            kept.append(r)
    z = np.array([r["logit"] for r in kept], dtype=np.float64)
    y = np.array([1 if r["label"] == "fake" else 0 for r in kept], dtype=np.int64)
    return z, y, skipped


def csv_data(upload) -> tuple[np.ndarray, np.ndarray]:
    from core.training.datasets import read_logit_csv

    fd, tmp = tempfile.mkstemp(suffix=".csv")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(upload.getvalue())
        z, y = read_logit_csv(tmp)
    finally:
        os.unlink(tmp)
    return np.asarray(z, dtype=np.float64), np.asarray(y, dtype=np.int64)


st.subheader("1 · Fit")
c = st.columns([2, 2, 3])
source = c[0].radio("Fit on", ["Reviewed items", "Uploaded CSV (logit, label)"], key="cal-source")
method = c[1].selectbox("Method", list(C.METHODS), key="cal-method",
                        help="temperature: one parameter, safest on small sets; platt: slope and offset; "
                             "isotonic: a step map, needs hundreds of labels.")
z = y = None
with c[2]:
    with services.guarded("reading the calibration data"):
        if source == "Reviewed items":
            z, y, skipped = reviewed_data()
            st.caption(f"{int((y == 0).sum())} real and {int((y == 1).sum())} fake reviewed item(s) scored by these "
                       f"weights; left out: " + ", ".join(f"{v} {k}" for k, v in skipped.items()))
        else:
            upload = st.file_uploader("CSV with `logit` and `label` columns", type=["csv"], key="cal-csv")
            if upload is not None:
                z, y = csv_data(upload)
                st.caption(f"{len(y)} row(s): {int((y == 0).sum())} real, {int((y == 1).sum())} fake.")

if st.button("Fit calibration", type="primary", key="cal-fit", disabled=z is None or len(z) == 0):
    with services.guarded("fitting the calibration"):
        record = C.fit_calibration(z, y, method, baseline=det.checkpoint.calibration,
                                   context={"model_sha256": det.checkpoint.sha256, "source": source,
                                            "fitted_by": who.name if who else None})
        st.session_state["cal-result"] = {"record": record, "logits": z, "labels": y}
        st.session_state.pop("cal-suggested", None)

fit = st.session_state.get("cal-result")
if fit:
    record, z_fit, y_fit = fit["record"], fit["logits"], fit["labels"]
    before, _ = det.probability(z_fit)
    after = C.apply_record(record, z_fit)
    for w in record.get("warnings") or []:
        st.warning(w)
    st.markdown(f"**Fitted:** {C.describe(record)}")
    rows = []
    for name, p in (("before (" + (det.checkpoint.calibration_version or "sigmoid") + ")", before),
                    ("after (" + record["version"] + ")", after)):
        rows.append({"calibration": name, "ECE": metrics.ece(p, y_fit), "Brier": metrics.brier(p, y_fit),
                     "NLL": metrics.nll(p, y_fit), "AUC": metrics.auc(p, y_fit)})
    st.dataframe(rows, hide_index=True, key="cal-metrics",
                 column_config={k: st.column_config.NumberColumn(format="%.4f") for k in ("ECE", "Brier", "NLL", "AUC")})
    st.caption("Measured on the fitting data (in-sample): expect somewhat worse on new images.")
    g = st.columns(3)
    g[0].plotly_chart(charts.reliability_figure({"before": metrics.reliability_curve(before, y_fit),
                                                 "after": metrics.reliability_curve(after, y_fit)}), key="cal-rel")
    g[1].plotly_chart(charts.roc_figure({"before": metrics.roc_points(before, y_fit),
                                         "after": metrics.roc_points(after, y_fit)}), key="cal-roc")
    g[2].plotly_chart(charts.det_figure({"before": metrics.det_points(before, y_fit),
                                         "after": metrics.det_points(after, y_fit)}), key="cal-det")

    st.subheader("2 · Review thresholds")
    if "cal-suggested" not in st.session_state:
        try:
            suggested = T.tiers_from_targets(after, y_fit, calibration_version=record["version"])
            pair = (float(suggested["real_below"]), float(suggested["fake_at_or_above"]))
            targets = (T.DEFAULT_TARGET_FPR, T.DEFAULT_TARGET_FNR)
        except Exception:  # noqa: BLE001 - a suggestion only
            pair, targets = (0.2, 0.8), None
        st.session_state["cal-suggested"] = pair
        st.session_state["cal-suggested-targets"] = targets
        st.session_state["cal-suggest-n"] = st.session_state.get("cal-suggest-n", 0) + 1
    t = st.columns([3, 1])
    with t[1]:
        target_fpr = st.number_input("Target FPR", 0.0, 1.0, T.DEFAULT_TARGET_FPR, 0.01, key="cal-tfpr")
        target_fnr = st.number_input("Target FNR", 0.0, 1.0, T.DEFAULT_TARGET_FNR, 0.01, key="cal-tfnr")

        def _suggest() -> None:
            ok, sug = services.act(PAGE, "suggesting thresholds", T.tiers_from_targets, after, y_fit,
                                   st.session_state["cal-tfpr"], st.session_state["cal-tfnr"],
                                   calibration_version=record["version"])
            if ok:
                st.session_state["cal-suggested"] = (float(sug["real_below"]), float(sug["fake_at_or_above"]))
                st.session_state["cal-suggested-targets"] = (st.session_state["cal-tfpr"], st.session_state["cal-tfnr"])
                st.session_state["cal-suggest-n"] = st.session_state.get("cal-suggest-n", 0) + 1

        st.button("Suggest from targets", key="cal-suggest", on_click=_suggest)
    with t[0]:
        lo_s, hi_s = st.session_state["cal-suggested"]
        lo, hi = st.slider("Real below · fake at or above (calibrated probability)", 0.0, 1.0,
                           value=(min(1.0, max(0.0, round(lo_s, 3))), min(1.0, max(0.0, round(hi_s, 3)))),
                           step=0.001, format="%.3f", key=f"cal-thresholds-{st.session_state['cal-suggest-n']}")
        proj = T.project_tiers(after, y_fit, lo, hi)
        m = st.columns(4)
        fmt = lambda v: "—" if v != v else f"{v:.1%}"  # noqa: E731 - nan shows as a dash
        m[0].metric("Projected FPR", fmt(proj["fpr"]), help="Reals called clearly fake")
        m[1].metric("Projected FNR", fmt(proj["fnr"]), help="Fakes called clearly real")
        m[2].metric("Review share", fmt(proj["review_share"]), help="Images sent to people")
        m[3].metric("Accuracy outside review", fmt(proj["accuracy_outside_review"]))
        st.plotly_chart(charts.score_histogram_figure(after, y_fit, {"real_below": lo, "fake_at_or_above": hi}),
                        key="cal-hist")

    st.subheader("3 · Save")
    st.text_input("Note for this version", key="cal-note", max_chars=500)

    def _save(activate: bool) -> None:
        def work():
            targets = st.session_state.get("cal-suggested-targets")
            untouched = (round(lo_s, 3), round(hi_s, 3)) == (round(lo, 3), round(hi, 3))
            if targets and untouched:  # the suggestion as fitted (exact values and the targets it met)
                tiers = T.tiers_from_targets(after, y_fit, *targets, calibration_version=record["version"])
            else:  # moved by hand: say so
                tiers = T.manual_tiers(lo, hi, after, y_fit, calibration_version=record["version"])
            return registry.save_version(calibration=record, tiers=tiers, created_by=who.name,
                                         note=st.session_state.get("cal-note") or "", activate=activate)

        ok, version = services.act(PAGE, "saving the new model version", work)
        if ok:
            st.session_state.pop("cal-result", None)
            services.flash("success", f"Saved {version.id} ({version.calibration_version})"
                           + (" and activated it." if activate else "."), PAGE)

    b = st.columns(2)
    b[0].button("Save as a new version", key="cal-save", disabled=who is None, on_click=_save, args=(False,))
    b[1].button("Save and activate", type="primary", key="cal-save-activate", disabled=who is None,
                on_click=_save, args=(True,))
    if who is None:
        st.caption("Saving records your name: enter it in the sidebar first.")

st.subheader("Model versions")
services.show_flashes(PAGE)
info = registry.active()
versions = registry.versions()
base_tiers = (det.checkpoint.tiers or {}) if info.version is None else {}
rows = [{"active": info.version is None, "version": "base", "calibration": "(as shipped)", "method": "",
         "real below": base_tiers.get("real_below"), "fake at or above": base_tiers.get("fake_at_or_above"),
         "ECE after": None, "created": "", "by": "", "note": str(info.base_path.name)}]
for v in reversed(versions):
    after_m = (v.metrics or {}).get("metrics_after") or {}
    rows.append({"active": info.version is not None and info.version.id == v.id, "version": v.id,
                 "calibration": v.calibration_version, "method": v.calibration_method,
                 "real below": (v.tiers or {}).get("real_below"), "fake at or above": (v.tiers or {}).get("fake_at_or_above"),
                 "ECE after": after_m.get("ece"), "created": v.created_at, "by": v.created_by, "note": v.note})
st.dataframe(rows, hide_index=True, key="cal-versions")
c = st.columns([2, 1, 1, 1])
pick = c[0].selectbox("Version", ["base"] + [v.id for v in reversed(versions)], key="cal-pick")


def _activate() -> None:
    pick = st.session_state.get("cal-pick", "base")
    services.act(PAGE, "activating the version", registry.activate, None if pick == "base" else pick,
                 by=who.name, success=f"Now serving {pick}.")


def _rollback() -> None:
    ok, now = services.act(PAGE, "rolling back", registry.rollback, by=who.name)
    if ok:
        services.flash("success", f"Rolled back; now serving {now.name}.", PAGE)


c[1].button("Activate", key="cal-activate", disabled=who is None, on_click=_activate)
c[2].button("Roll back", key="cal-rollback", disabled=who is None, on_click=_rollback)
acts = registry.activations()
if acts:
    with st.expander("Activation history"):
        st.dataframe(list(reversed(acts)), hide_index=True)

"""Calibration: fit a logit → probability map on reviewed items (or a CSV),
compare reliability before and after, choose review thresholds with their
projected error rates, and save / activate / roll back model versions."""
from __future__ import annotations

import streamlit as st

from core.calibration import calibrators as C
from core.evaluation import charts
from core.calibration import metrics
from core.calibration import tiers as T
from core.review.actions import calibrate as door
from dashboard import learning_panels, services

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
# data and fit: the same door as `python -m core calibrate` (core.review.actions.calibrate)
# ---------------------------------------------------------------------------
def _pct(v) -> str:
    return "—" if v is None or v != v else f"{v:.1%}"


st.subheader("1 · Fit")
c = st.columns([2, 2, 3])
source = c[0].radio("Fit on", ["Reviewed items", "Uploaded CSV (logit, label)"], key="cal-source")
method = c[1].selectbox("Method", list(C.METHODS), key="cal-method",
                        help="temperature: one parameter, safest on small sets; platt: slope and offset; "
                             "isotonic: a step map, needs hundreds of labels.")
data = None
with c[2]:
    with services.guarded("reading the calibration data"):
        if source == "Reviewed items":
            data = door.data_from_reviews(store, det.checkpoint, registry.same_weights())
            st.caption(f"{data.n_real} real and {data.n_fake} fake {data.description} of these weights; "
                       "left out: " + ", ".join(f"{v} {k}" for k, v in data.skipped.items()))
        else:
            upload = st.file_uploader("CSV with `logit` and `label` columns", type=["csv"], key="cal-csv")
            if upload is not None:
                data = door.data_from_csv(upload.getvalue(), det.checkpoint, name=upload.name)
                st.caption(f"{data.labels.size} row(s): {data.n_real} real, {data.n_fake} fake.")
        for note in (data.notes if data is not None else []):
            st.warning(note)
    if data is not None and min(data.n_real, data.n_fake) < door.DEFAULT_MIN_PER_CLASS:
        st.caption(f"A fit can be saved, but it is put into production only with at least "
                   f"{door.DEFAULT_MIN_PER_CLASS} labels of each class.")

if st.button("Fit calibration", type="primary", key="cal-fit", disabled=data is None or data.labels.size == 0):
    with services.guarded("fitting the calibration"):
        st.session_state["cal-result"] = door.fit(
            data, method, det.checkpoint,
            context={"source": source, "fitted_by": who.name if who else None})
        st.session_state.pop("cal-suggested", None)

fit = st.session_state.get("cal-result")
if fit:
    record, y_fit = fit.record, fit.data.labels
    judged = fit.probs_for_decisions
    oos_label = f"out of sample ({fit.folds}-fold)" if fit.probs_out_of_fold is not None else "in-sample"
    for note in fit.notes:
        st.warning(note)
    st.markdown(f"**Fitted:** {C.describe(record)}")
    rows = [{"calibration": f"serving now ({det.checkpoint.calibration_version or 'sigmoid'})",
             "measured": "on these labels", **{k.upper(): fit.active_metrics.get(k) for k in ("ece", "brier", "nll", "auc")}}]
    if fit.oos is not None:
        rows.append({"calibration": f"new fit ({record['version']})", "measured": oos_label,
                     **{k.upper(): fit.oos.get(k) for k in ("ece", "brier", "nll", "auc")}})
    rows.append({"calibration": f"new fit ({record['version']})", "measured": "in-sample (optimistic)",
                 "ECE": metrics.ece(fit.probs_in_sample, y_fit), "BRIER": metrics.brier(fit.probs_in_sample, y_fit),
                 "NLL": metrics.nll(fit.probs_in_sample, y_fit), "AUC": metrics.auc(fit.probs_in_sample, y_fit)})
    st.dataframe(rows, hide_index=True, key="cal-metrics",
                 column_config={k: st.column_config.NumberColumn(format="%.4f") for k in ("ECE", "BRIER", "NLL", "AUC")})
    st.caption("Out of sample: each label is predicted by a map fitted without it (cross-validation), which is "
               "what to expect on new images. In-sample figures are measured on the labels the map was fitted "
               "on and always look better.")
    g = st.columns(3)
    curves = {"serving now": fit.probs_active, f"new fit ({oos_label})": judged}
    g[0].plotly_chart(charts.reliability_figure({k: metrics.reliability_curve(p, y_fit) for k, p in curves.items()}),
                      key="cal-rel")
    g[1].plotly_chart(charts.roc_figure({k: metrics.roc_points(p, y_fit) for k, p in curves.items()}), key="cal-roc")
    g[2].plotly_chart(charts.det_figure({k: metrics.det_points(p, y_fit) for k, p in curves.items()}), key="cal-det")

    st.subheader("2 · Review thresholds")
    if "cal-suggested" not in st.session_state:
        st.session_state["cal-suggested"] = (float(fit.tiers["real_below"]), float(fit.tiers["fake_at_or_above"]))
        st.session_state["cal-suggested-tiers"] = fit.tiers
        st.session_state["cal-suggest-n"] = st.session_state.get("cal-suggest-n", 0) + 1
    t = st.columns([3, 1])
    with t[1]:
        st.number_input("Target FPR", 0.0, 1.0, T.DEFAULT_TARGET_FPR, 0.01, key="cal-tfpr")
        st.number_input("Target FNR", 0.0, 1.0, T.DEFAULT_TARGET_FNR, 0.01, key="cal-tfnr")

        def _suggest() -> None:
            ok, sug = services.act(PAGE, "suggesting thresholds", door.retier, fit,
                                   target_fpr=st.session_state["cal-tfpr"], target_fnr=st.session_state["cal-tfnr"])
            if ok:
                st.session_state["cal-suggested"] = (float(sug["real_below"]), float(sug["fake_at_or_above"]))
                st.session_state["cal-suggested-tiers"] = sug
                st.session_state["cal-suggest-n"] = st.session_state.get("cal-suggest-n", 0) + 1

        st.button("Suggest from targets", key="cal-suggest", on_click=_suggest)
    with t[0]:
        lo_s, hi_s = st.session_state["cal-suggested"]
        lo, hi = st.slider("Real below · fake at or above (calibrated probability)", 0.0, 1.0,
                           value=(min(1.0, max(0.0, round(lo_s, 3))), min(1.0, max(0.0, round(hi_s, 3)))),
                           step=0.001, format="%.3f", key=f"cal-thresholds-{st.session_state['cal-suggest-n']}")
        proj = T.project_tiers(judged, y_fit, lo, hi)
        st.caption(f"Projected on the labels, {oos_label}.")
        m = st.columns(4)
        m[0].metric("Projected FPR", _pct(proj["fpr"]), help="Reals called clearly fake")
        m[1].metric("Projected FNR", _pct(proj["fnr"]), help="Fakes called clearly real")
        m[2].metric("Review share", _pct(proj["review_share"]), help="Images sent to people")
        m[3].metric("Accuracy outside review", _pct(proj["accuracy_outside_review"]))
        st.plotly_chart(charts.score_histogram_figure(judged, y_fit, {"real_below": lo, "fake_at_or_above": hi}),
                        key="cal-hist")

    st.subheader("3 · Save")
    st.text_input("Note for this version", key="cal-note", max_chars=500)
    refusal, worse = fit.activation_refusal, fit.worse_than_active
    if refusal:
        st.info(refusal, icon=":material/block:")
    elif worse:
        st.warning(worse, icon=":material/warning:")
        st.checkbox("I understand it is worse on unseen labels; activate it anyway", key="cal-confirm-worse")

    def _save(activate: bool) -> None:
        def work():
            untouched = (round(lo_s, 3), round(hi_s, 3)) == (round(lo, 3), round(hi, 3))
            tiers = st.session_state["cal-suggested-tiers"] if untouched else door.retier(fit, lo, hi)
            return door.save_version(fit, registry, tiers=tiers, created_by=who.name,
                                     note=st.session_state.get("cal-note") or "", activate=activate,
                                     confirm_worse=bool(st.session_state.get("cal-confirm-worse")))

        ok, version = services.act(PAGE, "saving the new model version", work)
        if ok:
            st.session_state.pop("cal-result", None)
            services.flash("success", f"Saved {version.id} ({version.calibration_version})"
                           + (" and activated it." if activate else "."), PAGE)

    b = st.columns(2)
    b[0].button("Save as a new version", key="cal-save", disabled=who is None, on_click=_save, args=(False,))
    b[1].button("Save and activate", type="primary", key="cal-save-activate",
                disabled=who is None or bool(refusal) or (bool(worse) and not st.session_state.get("cal-confirm-worse")),
                on_click=_save, args=(True,))
    if who is None:
        st.caption("Saving records your name: enter it in the sidebar first.")

learning_panels.adapt_panel(store, registry, det, who, page=PAGE)
learning_panels.proposals_panel(store, registry, who, page=PAGE)

st.subheader("Model versions")
services.show_flashes(PAGE)
info = registry.active()
versions = registry.versions()
serving = services.model_summary(active)
base_tiers = serving["tiers"] if info.version is None else {}  # the fused tiers when CLIP fuses
rows = [{"active": info.version is None, "version": "base",
         "calibration": f"(as shipped) {serving['calibration_version'] or ''}".strip() if info.version is None
         else "(as shipped)", "method": serving["calibration_method"] if info.version is None else "",
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
    ok, _ = services.act(PAGE, "activating the version", door.activate_version, registry,
                         None if pick == "base" else pick, by=who.name, success=f"Now serving {pick}.")
    if ok:  # the queue's order follows the new version (recomputed in the background)
        learning_panels.after_activation(store, registry)


def _rollback() -> None:
    ok, now = services.act(PAGE, "rolling back", registry.rollback, by=who.name)
    if ok:
        services.flash("success", f"Rolled back; now serving {now.name}.", PAGE)
        learning_panels.after_activation(store, registry)


c[1].button("Activate", key="cal-activate", disabled=who is None, on_click=_activate)
c[2].button("Roll back", key="cal-rollback", disabled=who is None, on_click=_rollback)
acts = registry.activations()
if acts:
    with st.expander("Activation history"):
        st.dataframe(list(reversed(acts)), hide_index=True)

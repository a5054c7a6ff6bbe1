"""Monitor: what the model sees and says over time, read off the score log.

Daily score distribution, tier mix and flagged share, drift of recent scores
against a reference window (PSI and KS, with an alert state), queue inflow and
outflow, how often reviewers overturn the model, and what each model version learned from labels."""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from dashboard import forensics_panels, learning_panels, services
from dashboard.agreement_panel import agreement_panel

TIER_COLOURS = {"real": "#1a7f37", "review": "#d4a72c", "fake": "#cf222e"}
ALERT_BADGE = {"ok": ("green", "stable"), "warn": ("orange", "moderate shift"), "alert": ("red", "significant shift")}

st.title("Monitor")
store = services.store()
active = st.session_state.get("active_detector")

c = st.columns([2, 2, 3])
days = c[0].select_slider("Period (days)", options=[7, 14, 30, 60, 90], value=30, key="mon-days")
only_model = c[1].checkbox("Only the active model's scorings", value=False, key="mon-only-model",
                           disabled=active is None,
                           help="A model or calibration change moves scores; restrict to one model to see drift in "
                                "the inputs alone.")
model_sha = active.detector.checkpoint.sha256 if (active and only_model) else None
learning_panels.learned_line(store, services.registry(), key="mon-learned")
forensics_panels.playbook(store, active)


def _layout(fig: go.Figure, title: str, y: str) -> go.Figure:
    fig.update_layout(title=title, template="plotly_white", height=320, margin={"t": 50, "b": 30},
                      legend={"orientation": "h", "y": -0.25}, yaxis_title=y)
    return fig


with services.guarded("reading the score log"):
    hist = store.daily_histograms(days, bins=10, model_sha256=model_sha)
    day_names = [d["day"] for d in hist["days"]]
    edges = hist["edges"]
    centres = [f"{(a + b) / 2:.2f}" for a, b in zip(edges[:-1], edges[1:])]
    z = [[d["counts"][i] for d in hist["days"]] for i in range(len(centres))]
    fig = go.Figure(go.Heatmap(x=day_names, y=centres, z=z, colorscale="Blues", colorbar={"title": "images"},
                               hovertemplate="%{x}<br>P(fake) ≈ %{y}<br>%{z} images<extra></extra>"))
    st.plotly_chart(_layout(fig, "Daily score distribution", "P(fake) bin"), key="mon-hist")

    mix = store.tier_mix(days, model_sha256=model_sha)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for tier in ("real", "review", "fake"):
        fig.add_trace(go.Bar(x=[r["day"] for r in mix], y=[r[tier] for r in mix], name=tier,
                             marker_color=TIER_COLOURS[tier]), secondary_y=False)
    fig.add_trace(go.Scatter(x=[r["day"] for r in mix], y=[r["flagged_share"] for r in mix], name="flagged share",
                             mode="lines+markers", line={"color": "#333"}), secondary_y=True)
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title_text="share flagged fake", range=[0, 1], dtick=0.2, showgrid=False, secondary_y=True)
    st.plotly_chart(_layout(fig, "Tier mix and flagged share", "scorings"), key="mon-mix")

st.subheader("Drift")
c = st.columns(3)
recent_days = c[0].number_input("Recent window (days)", 1, 90, 7, key="mon-recent")
reference_days = c[1].number_input("Reference window (days before it)", 1, 365, 28, key="mon-ref")
min_samples = c[2].number_input("Minimum scorings per window", 5, 10000, 30, key="mon-min")
with services.guarded("computing drift"):
    ref_w, recent_w = store.default_windows(int(recent_days), int(reference_days))
    drift = store.drift(ref_w, recent_w, model_sha256=model_sha, min_samples=int(min_samples))
    colour, text = ALERT_BADGE.get(drift["alert"], ("gray", drift["alert"]))
    state = f"{drift['alert']}: {text}"
    if drift["insufficient_data"]:
        colour, state = "gray", "not enough data"
    with st.container(border=True, key="mon-drift"):
        m = st.columns(5)
        with m[0]:
            st.caption("Alert state")
            st.badge(state, color=colour)
        m[1].metric("PSI", "—" if drift["psi"] is None else f"{drift['psi']:.3f}",
                    help=f"warn ≥ {drift['thresholds']['warn']}, alert ≥ {drift['thresholds']['alert']}")
        m[2].metric("KS statistic", "—" if drift["ks"] is None else f"{drift['ks']:.3f}")
        m[3].metric("KS p-value", "—" if drift["ks_pvalue"] is None else f"{drift['ks_pvalue']:.3g}")
        m[4].metric("Scorings (ref / recent)", f"{drift['n_reference']} / {drift['n_recent']}")
        if drift["insufficient_data"]:
            st.info(f"Not enough scorings to judge drift (need {int(min_samples)} in each window).")
        st.caption(f"Reference {drift['reference_window'][0][:10]} – {drift['reference_window'][1][:10]}, "
                   f"recent {drift['recent_window'][0][:10]} – {drift['recent_window'][1][:10]}")

st.subheader("Review queue and reviewers")
with services.guarded("reading the queue history"):
    flow = store.queue_flow(days)
    fig = go.Figure()
    for name, colour in (("inflow", "#1f4e79"), ("outflow", "#1a7f37"), ("expired", "#d4a72c"),
                         ("skipped", "#8c8c8c")):
        fig.add_trace(go.Bar(x=[r["day"] for r in flow], y=[r[name] for r in flow], name=name, marker_color=colour))
    st.plotly_chart(_layout(fig, "Queue inflow and outflow", "items"), key="mon-flow")

    over = store.overturn_rate()
    c = st.columns(3)
    c[0].metric("Reviewer overturn rate", "—" if over["rate"] is None else f"{over['rate']:.1%}",
                help="Share of real/fake labels that contradict the model's verdict on the scoring reviewed.")
    c[1].metric("Labels compared", over["labelled"])
    c[2].metric("Overturned", over["overturned"])
    if over["by_reviewer"]:
        st.dataframe([{"reviewer": r, **v} for r, v in over["by_reviewer"].items()], hide_index=True,
                     column_config={"rate": st.column_config.NumberColumn(format="percent")})

agreement_panel(store)

learning_panels.versions_chart(services.registry(), key="mon-versions")

"""What the labels teach, on screen: the most similar already-reviewed items next to a verdict, the
Adapt panel and the learner's proposals on the Calibration page, the "what the model learned" line
(Review, Monitor) and the per-version chart (Monitor). Renders :func:`core.learning.neighbours.similar_items`,
:func:`core.review.actions.adapt.adapt_from_store` and :mod:`core.review.actions.learn`; no learning
logic here."""
from __future__ import annotations

from typing import Any

import streamlit as st
from PIL import Image

from dashboard import services, widgets

THUMB = 96


def _encoder_key() -> str | None:
    from core.encoders.clip import load_encoder

    encoder = load_encoder()
    return encoder.key if encoder is not None else None


def similar_items_panel(store: Any, sha256: str, image: Image.Image, *, key: str, k: int = 5,
                        hide_own_label: bool = False) -> None:
    """The k nearest labelled items by CLIP embedding, with exact and near duplicates (perceptual hash) first.

    A labelled duplicate is warned about at once, above the (folded) list; the list with its
    thumbnails is drawn only while its expander is open, so a closed one costs a rerun nothing.
    ``hide_own_label`` (blind double review) leaves out the item's own label: its exact duplicate."""
    from core.learning.features import get_clip
    from core.learning.neighbours import similar_items

    with services.guarded("finding similar reviewed items"):
        clip_key = _encoder_key()
        stored = get_clip(store.artifacts, sha256, clip_key) if clip_key else None
        result = similar_items(store, sha256=sha256, image=image, clip_embedding=stored.embedding if stored else None,
                               clip_key=clip_key, k=k, include_self=not hide_own_label)
        dups = [n for n in result.neighbours if n.duplicate]
        if dups:
            st.warning("This image, or a re-encoded copy of it, was judged before: "
                       + "; ".join(f"{n.duplicate} duplicate labelled {n.label} by {n.reviewer}" for n in dups),
                       icon=":material/content_copy:")
        box = st.expander(f"Similar reviewed items ({len(result.neighbours)})", expanded=False,
                          key=f"{key}-similar", on_change="rerun")
        if not box.open:
            return
        with box:
            if result.message:
                st.caption(result.message)
            if not result.neighbours:
                st.caption("No labelled item is similar enough to show." if result.n_labelled else
                           "Nothing has been labelled yet.")
                return
            cols = st.columns(min(len(result.neighbours), 6))
            for col, n in zip(cols, result.neighbours):
                thumb = widgets.stored_thumbnail(store, n.sha256, side=THUMB)
                if thumb is not None:
                    col.image(thumb, alt=f"labelled {n.label}")
                dist = "—" if n.distance is None else f"{n.distance:.3f}"
                tag = f" · {n.duplicate} duplicate" if n.duplicate else ""
                col.caption(f"**{n.label}** by {n.reviewer or '?'}{tag}  \n"
                            f"{n.name or n.sha256[:12]} · distance {dist}")


def adapt_panel(store: Any, registry: Any, detector: Any, who: Any, *, page: str) -> None:
    """Refit the heads and the fusion on reviewer labels; show before/after out of fold; save or activate."""
    from core.review.actions.adapt import adapt_from_store

    st.subheader("Adapt to your reviewers' labels")
    st.caption("Refits the LaDeDa head, the CLIP head and their fusion on the features stored when items were "
               "scored (no image is scored again), weighting reviewer labels above the base training data. Unlike "
               "calibration this can change which images rank above which. Every figure below is measured on "
               "labels the fit did not see (folds by labelling time).")
    if st.button("Fit on reviewer labels", key="adapt-fit", disabled=who is None):
        with services.guarded("adapting the model"):
            st.session_state["adapt-result"] = adapt_from_store(store, detector.checkpoint, by=who.name)
    result = st.session_state.get("adapt-result")
    if result is None:
        if who is None:
            st.caption("Adapting records your name: enter it in the sidebar first.")
        return
    cv = result.report["cv"]
    st.dataframe([{"model": name, **{k: cv[name].get(k) for k in ("auc", "ap", "ece", "review_share", "n")}}
                  for name in ("before", "after")], hide_index=True, key="adapt-cv",
                 column_config={k: st.column_config.NumberColumn(format="%.3f") for k in ("auc", "ap", "ece",
                                                                                          "review_share")})
    st.caption(f"{result.report['n_labels']} reviewer labels; before = the model serving now, after = the refit.")

    def _save(activate: bool) -> None:
        ok, version = services.act(page, "saving the adapted model", result.register, registry, by=who.name,
                                   activate=activate)
        if ok:
            st.session_state.pop("adapt-result", None)
            if activate:
                after_activation(store, registry)
            services.flash("success", f"Saved {version.id}" + (" and activated it." if activate else "."), page)

    b = st.columns(2)
    b[0].button("Save as a new version", key="adapt-save", on_click=_save, args=(False,))
    b[1].button("Save and activate", key="adapt-save-activate", type="primary", on_click=_save, args=(True,))


# -- the learning loop -----------------------------------------------------------------------------
#: What the loop benchmark measured (the figures and commands of data/models/MODEL_CARD.md, "The learning loop").
LOOP_MEASURED = """Measured leave-one-source-out with `python benchmarks/loop.py --data DIR --order queue|random --batch 25 --repeats 2 --model M.pt --json`, where `M.pt` is the shipped recipe fitted without the source (`python -m core.learning.bundle ... --hold-out SOURCE --out M.pt`); Intel Xeon @ 2.80GHz (avx512_vnni), 2 cores. AUC on the images not yet labelled:

| source | k = 0 | k = 50, queue | k = 50, random | k = 100, queue |
| --- | --- | --- | --- | --- |
| museum-quiz (111 images) | 0.838 | **0.901** | 0.869 | — (k = 75: 0.872) |
| kurlyto-mixed (177 images) | 0.669 | **0.997** (52 % clear, 98 % right) | 0.995 (40 % clear) | **1.000** (62 % clear, all right, no real called clearly fake) |

With no labels, on the test images of sources no part was fitted on (`python benchmarks/unseen_sources.py --corpus ../shared/corpus --unseen ../shared/unseen --eval test`): pooled AUC 0.752, 12 % of images get a clear verdict and 96 % of those are right; no real is called clearly fake. The figures, the commands and what was tried are in `data/models/MODEL_CARD.md` ("The learning loop", "Base heads from nine sources")."""


def after_activation(store: Any, registry: Any) -> None:
    """A version became active here: the queue's order follows it (recomputed on the learner's thread)."""
    from core.learning.background import maybe_learn

    maybe_learn(store, registry)


def learned_line(store: Any, registry: Any, *, key: str) -> None:
    """One line: what the active model learned from labels (computed in core), and a nudge to the
    background learner (cheap when there is nothing to do; the work runs on its own thread)."""
    from core.learning import background
    from core.review.actions.learn import learned_line as line

    with services.guarded("reading what the model learned"):
        background.maybe_learn(store, registry)
        text = line(store, registry)
        if background.running():
            text += " Learning from the latest labels now (in the background)."
        with st.container(key=key):
            st.caption(f":material/school: {text}")


def versions_chart(registry: Any, *, key: str) -> None:
    """Monitor: per model version that learned from labels, the labels it learned from, its out-of-fold
    AUC and the clear share of recent traffic under it."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from core.review.actions.learn import learned_versions

    st.subheader("What each model version learned")
    with services.guarded("reading the model versions"):
        rows = learned_versions(registry)
        if not rows:
            st.caption("No version has learned from reviewer labels yet.")
            return
        x = [r["version"] + ("" if r["ever_active"] else " (proposal)") for r in rows]
        fig = make_subplots(specs=[[{"secondary_y": True}]])
        fig.add_trace(go.Bar(x=x, y=[r["n_labels"] for r in rows], name="labels learned from",
                             marker_color="#9ecae1"), secondary_y=False)
        fig.add_trace(go.Scatter(x=x, y=[r["auc_after"] for r in rows], name="out-of-fold AUC",
                                 mode="lines+markers", line={"color": "#08519c"}), secondary_y=True)
        fig.add_trace(go.Scatter(x=x, y=[r["traffic_clear_share"] for r in rows], name="clear share of traffic",
                                 mode="lines+markers", line={"color": "#1a7f37", "dash": "dot"}), secondary_y=True)
        fig.update_yaxes(title_text="labels", secondary_y=False)
        fig.update_yaxes(title_text="AUC / share", range=[0, 1], secondary_y=True)
        fig.update_layout(template="plotly_white", height=320, margin={"t": 30, "b": 30},
                          legend={"orientation": "h", "y": -0.25})
        st.plotly_chart(fig, key=key)
        st.caption("Out-of-fold AUC: on reviewer labels each fit did not see (folds by labelling time). Clear share: "
                   "of the last 24 h of uploads when the version was made, from their stored features.")


def proposals_panel(store: Any, registry: Any, who: Any, *, page: str) -> None:
    """Calibration: candidates the background learner held back (or made in propose-only mode), with their
    figures; activating one goes through the registry door like any version."""
    from core.review.actions.learn import auto_activate, learn_every, proposals

    st.subheader("Learning from labels")
    every = learn_every()
    st.caption(("After every " + str(every) + " new labels a candidate is fitted in the background on base data "
                "plus all labels and compared with the active version on the same out-of-fold labels (folds by "
                "labelling time). " if every else "Automatic learning is off (LADEDA_LEARN_EVERY). ")
               + ("It is activated when it ranks better and does not call more reals clearly fake than its labelled "
                  "reals can tell from the tiers' 5 % target; otherwise it waits here." if auto_activate() else
                  "Automatic activation is off (LADEDA_AUTO_ACTIVATE=off): every candidate waits here.")
               + " Measured: `python benchmarks/loop.py --data DIR --order queue|random`.")
    with st.expander("How the loop was measured", expanded=False):
        st.markdown(LOOP_MEASURED)
    with services.guarded("reading the proposals"):
        waiting = proposals(registry)
        if not waiting:
            st.caption("No proposal waits.")
            return
        st.dataframe([{"version": r["version"], "labels": r["n_labels"], "AUC before": r["auc_before"],
                       "AUC after": r["auc_after"], "reals clearly fake before": r["reals_clearly_fake_before"],
                       "reals clearly fake after": r["reals_clearly_fake_after"],
                       "clear share of traffic": r["traffic_clear_share"], "why held back": r["why"],
                       "created": r["created_at"]} for r in reversed(waiting)],
                     hide_index=True, key="learn-proposals")

    def _activate(version_id: str) -> None:
        # the registry door, as the Adapt panel's "Save and activate": adapt's own minimum applied when it was fitted
        ok, _ = services.act(page, "activating the proposal", registry.activate, version_id,
                             by=who.name, success=f"Now serving {version_id}.")
        if ok:
            after_activation(store, registry)

    cols = st.columns(min(len(waiting), 4))
    for col, r in zip(cols, list(reversed(waiting))[:4]):
        col.button(f"Activate {r['version']}", key=f"learn-activate-{r['version']}", disabled=who is None,
                   on_click=_activate, args=(r["version"],))

"""What the labels teach, on screen: the most similar already-reviewed items next to a verdict, and
the Adapt panel on the Model page. Renders :func:`core.learning.neighbours.similar_items` and
:func:`core.review.actions.adapt.adapt_from_store`; no learning logic here."""
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
            services.flash("success", f"Saved {version.id}" + (" and activated it." if activate else "."), page)

    b = st.columns(2)
    b[0].button("Save as a new version", key="adapt-save", on_click=_save, args=(False,))
    b[1].button("Save and activate", key="adapt-save-activate", type="primary", on_click=_save, args=(True,))

"""Monitor panel: how reliable the labels are — Cohen's kappa per reviewer pair and overall on blind
double reviews, and what reviewers said against what the model said. Renders
``ReviewStore.agreement()`` (core.review.agreement does the arithmetic)."""
from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import services

KAPPA_WORDS = ((0.8, "almost perfect"), (0.6, "substantial"), (0.4, "moderate"), (0.2, "fair"), (0.0, "slight"))


def kappa_words(kappa: float | None) -> str:
    """Landis & Koch's reading of a kappa value."""
    if kappa is None:
        return "undefined (every label the same)"
    for floor, words in KAPPA_WORDS:
        if kappa >= floor:
            return words
    return "worse than chance"


def agreement_panel(store: Any) -> None:
    st.subheader("Label agreement (blind double review)")
    share = store.second_review_share
    st.caption("Double review is off for this database." if share is None else
               f"{share:.0%} of first labels, plus every label that overturned a clear model verdict, go to a second "
               "reviewer who does not see the first; disagreements go to a third, adjudicating reviewer.")
    with services.guarded("reading label agreement"):
        stats = store.agreement()
        overall = stats["overall"]
        if overall is None:
            st.info("No item has been reviewed twice yet, so agreement cannot be measured.", icon=":material/groups:")
        else:
            c = st.columns(3)
            c[0].metric("Double-reviewed items", overall["n"])
            c[1].metric("Raw agreement", f"{overall['agreement']:.0%}")
            kappa = overall["kappa"]
            c[2].metric("Cohen's κ (first vs second)", "—" if kappa is None else f"{kappa:.2f}",
                        help="Agreement beyond chance: 1 perfect, 0 what chance alone would give.")
            st.caption(f"Overall agreement is {kappa_words(kappa)}.")
            st.dataframe([{"reviewers": " · ".join(p["reviewers"]), "items": p["n"], "agreement": p["agreement"],
                           "κ": p["kappa"], "reading": kappa_words(p["kappa"])} for p in stats["pairs"]],
                         hide_index=True, key="mon-kappa-pairs",
                         column_config={"agreement": st.column_config.NumberColumn(format="%.2f"),
                                        "κ": st.column_config.NumberColumn(format="%.2f")})
        matrix = stats["reviewer_vs_model"]
        st.markdown("**Reviewers against the model** (label in force × the model's tier)")
        st.dataframe([{"model tier": tier, **counts} for tier, counts in matrix.items()], hide_index=True,
                     key="mon-confusion")

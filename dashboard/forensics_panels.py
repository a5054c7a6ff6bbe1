"""The forensic parts of the pages: the reliability line next to the verdict, the stress
test (stability probe), the forensic layer switcher, the evidence-report download (Inspect
and Review, :func:`verdict_extras`) and the decision-tree playbook (Monitor, :func:`playbook`).

Everything here only renders what ``core`` returns: ``core.scoring.probe``,
``core.scoring.forensics``, ``core.review.reliability``, ``core.review.playbook``
and ``core.review.report``. Buttons act in callbacks, so what is drawn is
always the state after the action.
"""
from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import services
from dashboard.widgets import picture

#: Layer switcher options: label → forensic layer key (None: the image itself).
LAYERS = {"Image": None, "Error level (ELA)": "ela", "Noise residual": "noise", "Model input": "model_input"}
ELA_QUALITIES = (70, 80, 90, 95)
TIER_COLOURS = {"real": "green", "review": "orange", "fake": "red"}


# ---------------------------------------------------------------------------
# Inspect and Review: everything below the verdict card
# ---------------------------------------------------------------------------
def verdict_extras(ev: Any, detector: Any, store: Any, who: Any, *, key: str, folded: bool = False) -> None:
    """Reliability line, stress test, forensic layers and report download for one analysed image.

    ``folded`` (Review, where a reviewer goes from item to item) puts the tools in an expander that is
    drawn only while open (it stays open from item to item once opened); a stored stress-test outcome
    is still said in one line beside it, a flip as a warning."""
    page = f"{key}-forensics"
    with services.guarded("reading the label record"):
        reliability_line(ev, store, key=key)
    if not folded:
        _tools(ev, detector, store, who, key=key, page=page)
        return
    services.show_flashes(page)
    box = st.expander("Forensic tools: layers, stress test, evidence report", key=f"{key}-tools",
                      on_change="rerun", icon=":material/biotech:")
    if box.open:
        with box:
            _tools(ev, detector, store, who, key=key, page=page)
        return
    with services.guarded("reading the stress test"):
        result = _probe_result(ev, detector, store)
        if result is None:
            st.caption("Stress test not run on this image yet (Forensic tools).")
        elif result["flips"]:
            st.warning(result["summary"], icon=":material/warning:")
        else:
            st.caption(f":material/verified: {result['summary']}")


def _tools(ev: Any, detector: Any, store: Any, who: Any, *, key: str, page: str) -> None:
    with st.container(border=True, key=f"{key}-forensics"):
        services.show_flashes(page)
        left, right = st.columns([3, 2])
        with left:
            st.markdown("**Forensic views** (evidence only: none of them feeds the tier)")
            with services.guarded("drawing the forensic view"):
                layer_switcher(ev, detector, key=key)
        with right:
            st.markdown("**Stress test**")
            with services.guarded("showing the stress test"):
                stress_test(ev, detector, store, who, key=key, page=page)
            st.markdown("**Evidence report**")
            with services.guarded("preparing the report"):
                report_download(ev, detector, store, who, key=key, page=page)


@st.cache_data(ttl=300, show_spinner=False, max_entries=16)
def _segment_table(db_path: str, last_label_event: int | None, _store: Any) -> Any:
    """The per-segment counts, recomputed only when a label event was added."""
    from core.review.reliability import SegmentTable

    return SegmentTable.from_store(_store)


def reliability_line(ev: Any, store: Any, *, key: str) -> None:
    analysis = ev.analysis
    guardrails = analysis.guardrails.to_json() if analysis.guardrails is not None else None
    latest = store.label_history(limit=1)
    table = _segment_table(str(store.db_path), latest[0]["id"] if latest else None, store)
    line = table.line(analysis.decision.tier, guardrails)
    with st.container(key=f"{key}-reliability"):
        st.caption(f":material/insights: {line.text}",
                   help="From the labels in force in the review store: reviewers' real/fake labels on items in the "
                        "same tier, with or without a face and in the same JPEG-quality band, against the model's "
                        "verdict on the scoring they saw. Unsure labels are not counted.")


def _stored(store: Any, sha256: str) -> bool:
    """Whether the store holds this item (an unknown or malformed sha is simply not stored)."""
    from core.review.store import StoreError

    try:
        return bool(sha256) and store.has_item(sha256)
    except StoreError:
        return False


# -- stability probe ----------------------------------------------------------
def _weights_key(detector: Any) -> str:
    from core.model.registry import weights_key

    return weights_key(detector.checkpoint)


def _run_probe(ev: Any, detector: Any, store: Any, who: Any, page: str) -> None:
    from core.scoring.probe import probe, record_probe

    def work() -> dict[str, Any]:
        result = probe(detector, ev.analysis.decoded, name=ev.name)
        out = result.to_json()
        if _stored(store, result.sha256):
            out["recorded"] = record_probe(store, result, model_key=_weights_key(detector),
                                           by=who.name if who else None)
        return out

    ok, out = services.act(page, "running the stress test", work)
    if ok:
        ev.extras["probe"] = out
        if out.get("recorded", {}).get("queued"):
            services.flash("warning", "The verdict flips under a benign edit: the item was sent to review.", page)


def _probe_result(ev: Any, detector: Any, store: Any) -> dict[str, Any] | None:
    """This image's stress test: run on this page, else the one stored for this model, else None."""
    from core.scoring.probe import stored_probe

    result = ev.extras.get("probe")
    if result is None and _stored(store, ev.data_sha256):
        result = stored_probe(store, ev.data_sha256, _weights_key(detector),
                              model_sha256=detector.checkpoint.sha256)
        if result is not None:
            ev.extras["probe"] = result
    return result


def stress_test(ev: Any, detector: Any, store: Any, who: Any, *, key: str, page: str) -> None:
    result = _probe_result(ev, detector, store)
    st.button("Stress test" if result is None else "Run the stress test again", key=f"{key}-probe",
              icon=":material/compress:", on_click=_run_probe, args=(ev, detector, store, who, page),
              help="Re-scores the image after JPEG q90 / q75 / q50, downscaling ×0.75 / ×0.5 and a 10 % centre "
                   "crop; a tier that flips sends the item to review. Stored with the scoring.")
    if result is None:
        st.caption("Does the verdict survive a benign re-encode or resize of this very image?")
        return
    if result["flips"]:
        st.warning(result["summary"], icon=":material/warning:")
    else:
        st.success(result["summary"], icon=":material/verified:")
    rows = [{"variant": v["name"], "P(fake)": v["probability"], "tier": v["tier"] or "—",
             "flip": "flips" if v.get("flipped") else (v.get("skipped") or "")}
            for v in [result["original"], *result["variants"]]]
    st.dataframe(rows, hide_index=True, key=f"{key}-probe-table",
                 column_config={"P(fake)": st.column_config.NumberColumn(format="%.3f")})


# -- forensic layers ------------------------------------------------------------
def layer_switcher(ev: Any, detector: Any, *, key: str) -> None:
    from core.scoring import forensics

    choice = st.segmented_control("Layer", list(LAYERS), default=None, key=f"{key}-layer",
                                  label_visibility="collapsed")
    if choice is None:  # the image itself is already in view beside the verdict
        st.caption("Pick a layer to see the same pixels another way; the image itself is in the view above.")
        return
    layer_key = LAYERS[choice]
    if layer_key is None:
        from core.scoring.explain import fit_display

        st.image(picture(fit_display(ev.analysis.decoded.image)), alt="the image", width="stretch",
                 caption="The image as decoded (upright RGB): switch layers to compare the same pixels.")
        return
    params: dict[str, Any] = {}
    if layer_key == "ela":
        params["quality"] = int(st.select_slider("ELA re-save quality", options=list(ELA_QUALITIES),
                                                 value=forensics.ELA_QUALITY, key=f"{key}-ela-q"))
    cache_key = ("layer", layer_key, tuple(sorted(params.items())))
    layer = ev.extras.get(cache_key)
    if layer is None:
        layer = ev.extras[cache_key] = forensics.layer(layer_key, ev.analysis.decoded, detector.spec, **params)
    st.image(picture(layer.image), alt=layer.title, width="stretch", caption=layer.title)
    st.markdown(f"**What it shows.** {layer.shows}")
    st.markdown(f"**How it misleads.** {layer.misleads}")


# -- evidence report --------------------------------------------------------------
def _prepare_report(ev: Any, detector: Any, store: Any, who: Any, key: str, page: str) -> None:
    from core.review.report import build_report

    ok, report = services.act(page, "preparing the evidence report", build_report, store, ev.data_sha256, detector,
                              generated_by=who.name if who else None, analysis=ev.analysis)
    if ok:
        st.session_state[f"{key}-report"] = (ev.data_sha256, report.html, report.head)


def report_download(ev: Any, detector: Any, store: Any, who: Any, *, key: str, page: str) -> None:
    if not _stored(store, ev.data_sha256):
        st.caption("The report is available once the image is stored.")
        return
    ready = st.session_state.get(f"{key}-report")
    if ready and ready[0] == ev.data_sha256:
        sha, doc, head = ready
        st.download_button("Download evidence report (HTML)", data=doc.encode("utf-8"), mime="text/html",
                           file_name=f"evidence-{sha[:12]}.html", key=f"{key}-report-download",
                           icon=":material/download:", on_click="ignore", type="primary")
        st.caption(f"Chain head `{head[:16]}…` · check it with `python -m core verify-report --db DB FILE.html`")
        st.button("Prepare again", key=f"{key}-report-again", type="tertiary", on_click=_prepare_report,
                  args=(ev, detector, store, who, key, page))
        return
    st.button("Prepare evidence report", key=f"{key}-report", icon=":material/description:",
              on_click=_prepare_report, args=(ev, detector, store, who, key, page),
              help="One self-contained HTML file: image and hash, model and calibration, verdict with its evidence, "
                   "probe, forensic views and every event under a hash chain.")


# ---------------------------------------------------------------------------
# Monitor: the decision-tree playbook
# ---------------------------------------------------------------------------
PLAYBOOK_PAGE = "monitor-playbook"


def _raise(threshold: float) -> None:
    from core.review.playbook import raise_threshold

    active = st.session_state.get("active_detector")
    who = services.identity()
    if active is None or who is None:
        return
    services.act(PLAYBOOK_PAGE, "raising the threshold", raise_threshold, services.registry(),
                 active.detector.checkpoint, threshold, by=who.name,
                 success=f"Saved and activated a version with the fake threshold at {threshold:.3f} "
                         "(roll back on the Calibration page).")


def _export(since: str, only_new: bool) -> None:
    who = services.identity()
    store = services.store()
    ok, res = services.act(PLAYBOOK_PAGE, "exporting the hard negatives", store.export_batch, services.exports_dir(),
                           since=since, only_new=only_new, exported_by=who.name if who else None)
    if ok:
        services.flash("success", f"Exported {res['counts'].get('hard_negatives', 0)} hard negatives to "
                       f"{res.get('zip')} (also listed on the Export page).", PLAYBOOK_PAGE)


def _action(action: Any, who: Any, key: str) -> None:
    if action.kind == "page":
        st.page_link(action.target, label=action.label, icon=":material/arrow_forward:", help=action.detail)
    elif action.kind == "command":
        st.markdown(f"**{action.label}:** {action.detail}")
        st.code(action.target, language="bash")
    elif action.key == "raise_threshold":
        st.button(action.label, key=f"{key}-raise", type="primary", disabled=who is None, help=action.detail,
                  on_click=_raise, args=(float(action.params["fake_at_or_above"]),))
    elif action.key == "export_hard_negatives":
        st.button(action.label, key=f"{key}-export", type="primary", disabled=who is None, help=action.detail,
                  on_click=_export, args=(action.params["since"], bool(action.params.get("only_new", False))))


def playbook(store: Any, active: Any) -> None:
    """Which branch of the improvement plan's decision tree the live data is on, its evidence and actions."""
    from core.review import playbook as pb

    who = services.identity()
    with st.container(border=True, key="mon-playbook"):
        st.subheader("Playbook")
        services.show_flashes(PLAYBOOK_PAGE)
        with services.guarded("running the playbook"):
            tiers = active.detector.checkpoint.tiers if active is not None else None
            book = pb.evaluate(store, tiers=tiers, recent_days=int(st.session_state.get("mon-recent", 7)),
                               reference_days=int(st.session_state.get("mon-ref", 28)))
            b = book.branch
            headline = f"**{b.node} · {b.title}**"
            (st.warning if b.active else st.success)(headline, icon=":material/account_tree:")
            st.markdown("\n".join(f"- {line}" for line in b.evidence))
            if b.actions and who is None:
                st.caption("Enter your name in the sidebar to take an action.")
            for i, action in enumerate(b.actions):
                _action(action, who, f"mon-playbook-{b.key}-{i}")
            others = [c for c in book.active if c is not b]
            if others:
                st.caption("Also triggered: " + "; ".join(f"{c.node} · {c.title}" for c in others))
            with st.expander("Every check"):
                for c in book.checks:
                    state = "triggered" if c.active else ("not judged: too little data" if not c.judged else "clear")
                    st.markdown(f"**{c.node} · {c.title}** — {state}\n" + "\n".join(f"- {e}" for e in c.evidence))
                st.caption(f"Recent window {book.recent_window[0][:10]} – {book.recent_window[1][:10]}, reference "
                           f"{book.reference_window[0][:10]} – {book.reference_window[1][:10]}.")

"""Rendering shared by the pages: header, model panel, verdict card, the
evidence panel (heatmap, GradCAM, top patches, poolings, guardrails, timings)
and the labelling controls. Pixels come from :mod:`core.scoring.explain`.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import streamlit as st

from core.scoring import explain
from dashboard import services

TIER_STYLE = {
    "real": ("green", "Real", ":material/verified:"),
    "review": ("orange", "Needs review", ":material/help:"),
    "fake": ("red", "Fake", ":material/report:"),
}
LABEL_BUTTONS = (  # value, text, keyboard shortcut
    ("real", "Real", "A"),  # "A" for authentic: Streamlit reserves R (rerun) and C (clear cache)
    ("fake", "Fake", "F"),
    ("unsure", "Unsure", "U"),
)
#: Analyses kept per browser session (so sliders do not re-run the model); small because each holds
#: the decoded image, which can be large.
SESSION_CACHE = 3


# ---------------------------------------------------------------------------
# shell
# ---------------------------------------------------------------------------
def model_panel(where: Any, active: services.ActiveDetector) -> None:
    s = services.model_summary(active)
    where.markdown("**Model**")
    where.caption(f"{s['label']} · `{s['sha256'][:12]}` · {s['version']}")
    cal = s["calibration_version"]
    where.caption(f"Calibration: {cal} ({s['calibration_method']})" if cal else
                  "Calibration: none (plain sigmoid of the logit)")
    where.caption(f"Preprocessing: {s['preprocess_summary']} · `{s['preprocess_fingerprint']}`")
    if active.warning:
        where.warning(active.warning, icon=":material/warning:")


def header(active: services.ActiveDetector | None, who: services.Identity | None) -> None:
    """One line at the top of every page: model, calibration, preprocessing, reviewer."""
    parts = []
    if active is not None:
        s = services.model_summary(active)
        parts.append(f"**{s['label']}** `{s['sha256'][:12]}` ({s['version']})")
        parts.append(f"calibration **{s['calibration_version'] or 'none'}**")
        parts.append(f"preprocessing `{s['preprocess_fingerprint']}`: {s['preprocess_summary']}")
    else:
        parts.append("**no model loaded**")
    parts.append(f"reviewer **{who.display}**" if who else "reviewer **not set**")
    with st.container(key="app-header"):
        st.caption(" · ".join(parts))


# ---------------------------------------------------------------------------
# analysis cache (per session)
# ---------------------------------------------------------------------------
@dataclass
class Evidence:
    """One analysed image and the explanations computed for it so far."""

    analysis: Any  #: core.scoring.analysis.Analysis
    model_sha256: str
    name: str
    data_sha256: str
    elapsed_ms: float
    extras: dict[str, Any] = field(default_factory=dict)  #: gradcam result, crops, ...


def _cache() -> "OrderedDict[tuple[str, str], Evidence]":
    cache = st.session_state.get("_evidence_cache")
    if cache is None:
        cache = st.session_state["_evidence_cache"] = OrderedDict()
    return cache


def cached_evidence(data_sha256: str, model_sha256: str) -> Evidence | None:
    ev = _cache().get((data_sha256, model_sha256))
    if ev is not None:
        _cache().move_to_end((data_sha256, model_sha256))
    return ev


def remember(ev: Evidence) -> Evidence:
    cache = _cache()
    cache[(ev.data_sha256, ev.model_sha256)] = ev
    while len(cache) > SESSION_CACHE:
        cache.popitem(last=False)
    return ev


def analyse(detector: Any, data: bytes, name: str, data_sha256: str) -> Evidence:
    """Run (or reuse) ``core.scoring.analysis.analyse`` on these bytes with this detector."""
    model_sha = detector.checkpoint.sha256 or ""
    ev = cached_evidence(data_sha256, model_sha)
    if ev is not None:
        return ev
    from core.scoring.analysis import analyse as _analyse

    t0 = time.perf_counter()
    analysis = _analyse(detector, data, name=name)
    return remember(Evidence(analysis=analysis, model_sha256=model_sha, name=name, data_sha256=data_sha256,
                             elapsed_ms=(time.perf_counter() - t0) * 1e3))


# ---------------------------------------------------------------------------
# verdict
# ---------------------------------------------------------------------------
def _tiers_of(analysis: Any, detector: Any) -> dict[str, Any] | None:
    """The thresholds the policy applied (its defaults when the model has no tiers)."""
    decision = getattr(analysis, "decision", None)
    for source in (getattr(decision, "thresholds", None), getattr(detector.checkpoint, "tiers", None)):
        if source:
            return dict(source)
    return None


def verdict_card(ev: Evidence, detector: Any, *, key: str) -> None:
    """Tier with its reasons, calibrated probability, the thresholds that decided it."""
    a = ev.analysis
    score, decision = a.score, a.decision
    colour, text, icon = TIER_STYLE.get(decision.tier, ("gray", str(decision.tier), ":material/help:"))
    tiers = _tiers_of(a, detector)
    with st.container(border=True, key=f"{key}-verdict"):
        left, mid, right = st.columns([1.1, 1.0, 2.0])
        with left:
            st.caption("Verdict")
            st.markdown(f"### :{colour}[{icon} {text}]")
            st.caption(ev.name)
        with mid:
            what = "calibrated probability of fake" if score.calibrated else "probability of fake (uncalibrated sigmoid)"
            st.metric("P(fake)", f"{score.probability:.1%}", help=what)
            st.caption(f"logit {score.logit:+.3f} · {'calibrated' if score.calibrated else 'uncalibrated'}")
        with right:
            if tiers:
                st.markdown(f"**Thresholds:** real below **{float(tiers['real_below']):.3f}** · "
                            f"fake at or above **{float(tiers['fake_at_or_above']):.3f}**")
            if getattr(decision, "changed_by_guardrails", False):
                base = TIER_STYLE.get(decision.base_tier, ("", decision.base_tier, ""))[1]
                st.markdown(f"The score alone says **{base}**; the guardrails changed it to **{text}**.")
            reasons = list(getattr(decision, "reasons", []) or [])
            if reasons:
                st.markdown("\n".join(f"- {r}" for r in reasons))
            else:
                st.caption("No further reasons.")


# ---------------------------------------------------------------------------
# evidence panel
# ---------------------------------------------------------------------------
def heatmap_panel(ev: Evidence, detector: Any, *, key: str) -> None:
    score, image = ev.analysis.score, ev.analysis.decoded.image
    c1, c2 = st.columns(2)
    opacity = c1.slider("Heatmap opacity", 0.0, 1.0, explain.DEFAULT_OPACITY, 0.05, key=f"{key}-opacity")
    limit = c2.select_slider("Colour range (± patch logit; the same on every image)",
                             options=list(explain.LOGIT_LIMIT_CHOICES), value=explain.DEFAULT_LOGIT_LIMIT,
                             key=f"{key}-limit")
    overlay = explain.heatmap_for_score(image, score, detector.geometry, limit=float(limit), opacity=float(opacity))
    st.image(overlay, caption=f"Patch logits over the image ({score.patch_map_shape[0]}×{score.patch_map_shape[1]} "
                              f"patches; the image logit is their mean)", alt="patch heatmap", width="stretch")
    st.image(explain.colour_legend(float(limit)), alt="heatmap colour scale")


def gradcam_panel(ev: Evidence, detector: Any, *, key: str, enabled: bool) -> None:
    if not enabled:
        st.caption("GradCAM is off.")
        return
    res = ev.extras.get("gradcam")
    if res is None:
        predicted = "fake" if ev.analysis.score.probability >= 0.5 else "real"  # the calibrated prediction
        with st.spinner("Computing GradCAM…"):
            res = explain.gradcam_for_detector(detector, ev.analysis.decoded, target=predicted)
        ev.extras["gradcam"] = res
    st.image(res.overlay, caption=f"GradCAM for the predicted class ({res.target}) at {res.layer}, "
                                  f"{res.elapsed_ms:.0f} ms", alt="gradcam overlay", width="stretch")
    st.caption("Normalised per image (as GradCAM always is), unlike the heatmap's fixed scale. At the last "
               "layer it shows where the patch logits push towards the predicted class.")


def top_patches_panel(ev: Evidence) -> None:
    score, image = ev.analysis.score, ev.analysis.decoded.image
    crops = ev.extras.get("crops")
    if crops is None:
        crops = ev.extras["crops"] = explain.top_patch_crops(image, score.top_patches)
    if not crops:
        st.caption("No patches.")
        return
    cols = st.columns(len(crops))
    for col, crop in zip(cols, crops):
        x0, y0, x1, y1 = crop.box
        col.image(crop.image, alt=f"top patch {crop.rank}")
        col.caption(f"#{crop.rank} logit {crop.logit:+.2f} · ({x0},{y0})–({x1},{y1})")


def poolings_panel(ev: Evidence) -> None:
    pool = ev.analysis.score.poolings
    rows = [
        {"pooling": "mean (the model's image logit)", "logit": pool["mean"]},
        {"pooling": "max patch", "logit": pool["max"]},
        {"pooling": f"top-k mean (k={int(pool.get('topk_k', 0))})", "logit": pool["topk_mean"]},
    ]
    for r in rows:
        r["sigmoid"] = 1 / (1 + math.exp(-max(-700.0, min(700.0, r["logit"]))))
    st.dataframe(rows, hide_index=True, width="stretch", column_config={
        "pooling": st.column_config.TextColumn(width="medium"),
        "logit": st.column_config.NumberColumn(format="%+.3f", width="small"),
        "sigmoid": st.column_config.NumberColumn(format="%.3f", width="small")})
    st.caption("Sigmoid of each pooled logit, uncalibrated: calibration applies to the mean only. Max and top-k "
               "show whether a small region drives the score.")


def guardrail_panel(ev: Evidence) -> None:
    """Faces with their own scores, image quality and metadata evidence (``core.scoring.guardrails``)."""
    report = getattr(ev.analysis, "guardrails", None)
    if report is None:
        st.caption("Guardrails were not run.")
        return
    image = ev.analysis.decoded.image
    hi = float((getattr(ev.analysis.decision, "thresholds", None) or {}).get("fake_at_or_above", 0.5))
    c1, c2 = st.columns([3, 2])
    with c1:
        if report.faces:
            boxes = []
            for i, f in enumerate(report.faces, 1):
                text = f"face {i}: " + (f"P(fake) {f.score:.2f}" if f.score is not None else "not scored")
                colour = (214, 39, 40) if (f.score is not None and f.score >= hi) else (26, 127, 55)
                boxes.append(explain.LabelledBox(tuple(int(v) for v in f.box), text, colour))
            st.image(explain.draw_boxes(image, boxes), alt="faces", width="stretch",
                     caption=f"{len(report.faces)} face(s); each crop is scored on its own by the same model")
            st.dataframe([{"face": i, "P(fake)": f.score, "logit": f.logit, "detection": f.confidence,
                           "found by": f.pass_name, "box": str(tuple(f.box))}
                          for i, f in enumerate(report.faces, 1)], hide_index=True,
                         column_config={"P(fake)": st.column_config.NumberColumn(format="%.3f"),
                                        "logit": st.column_config.NumberColumn(format="%+.2f"),
                                        "detection": st.column_config.NumberColumn(format="%.2f")})
        else:
            st.caption("No face found: the verdict is about the whole image.")
    with c2:
        q = report.quality
        st.markdown("**Quality**")
        flag = lambda bad: " ⚠" if bad else ""  # noqa: E731
        lines = [f"- Sharpness (blur measure): **{q.blur:.0f}**{flag(q.blurry)}",
                 "- JPEG quality: " + (f"**{q.jpeg_quality:.0f}**{flag(q.low_jpeg_quality)}"
                                       if q.jpeg_quality is not None else "not a JPEG"),
                 f"- Resolution: **{q.width}×{q.height}**"
                 + (f" (model input {q.model_input[1]}×{q.model_input[0]})" if q.model_input else "")
                 + (" — upscaled for the model" if q.upscaled else "")
                 + (" — too small to judge" if q.too_small and not q.heavily_upscaled else "")
                 + flag(q.heavily_upscaled or q.too_small)]
        lines += [f"- Screenshot hint: {h}" for h in q.screenshot_hints]
        st.markdown("\n".join(lines))
        st.markdown("**Metadata evidence**")
        st.markdown("\n".join(f"- {line}" for line in report.metadata.evidence()))
        raw = report.metadata.to_json()
        if raw.get("exif") or raw.get("text_chunks") or raw.get("xmp_hints"):
            with st.popover("Raw metadata"):
                st.json({k: raw[k] for k in ("exif", "text_chunks", "xmp_hints", "c2pa")}, expanded=True)


def timings_panel(ev: Evidence) -> None:
    t = dict(ev.analysis.score.timings_ms)
    t.update(getattr(ev.analysis, "timings_ms", None) or {})
    report = getattr(ev.analysis, "guardrails", None)
    for k, v in (getattr(report, "timings_ms", None) or {}).items():
        t[f"guardrails: {k}"] = v
    if "gradcam" in ev.extras:
        t["gradcam"] = ev.extras["gradcam"].elapsed_ms
    t["analysis (end to end)"] = ev.elapsed_ms
    st.dataframe([{"step": k, "ms": float(v)} for k, v in t.items()], hide_index=True,
                 column_config={"ms": st.column_config.NumberColumn(format="%.1f")})


def evidence(ev: Evidence, detector: Any, *, key: str, gradcam: bool = True) -> None:
    """The whole evidence panel below a verdict card."""
    left, right = st.columns(2)
    with left:
        st.markdown("**Patch heatmap**")
        heatmap_panel(ev, detector, key=key)
    with right:
        st.markdown("**GradCAM**")
        cam_slot = st.container()
    st.markdown("**Most-fake patches**")
    top_patches_panel(ev)
    p1, p2 = st.columns([2, 3])
    with p1:
        st.markdown("**Pooling comparison**")
        poolings_panel(ev)
    with p2:
        with st.expander("Guardrails: faces, quality, metadata", expanded=True):
            guardrail_panel(ev)
    with cam_slot:  # last: the slowest part, so everything above is already on screen
        gradcam_panel(ev, detector, key=key, enabled=gradcam)
    with st.expander("Timings"):
        timings_panel(ev)


# ---------------------------------------------------------------------------
# labelling controls
# ---------------------------------------------------------------------------
def label_controls(*, key: str, on_label: Callable[[str, str], None], shortcuts: bool = False,
                   extra: list[tuple[str, str, str | None, Callable[[str], None]]] | None = None,
                   disabled: bool = False) -> None:
    """Real / Fake / Unsure buttons (plus ``extra`` buttons) with a note field.

    Clicks run as callbacks before the next render: ``on_label(label, note)``;
    ``extra`` items are ``(key, text, shortcut, callback(note))``. Streamlit shows each
    keyboard shortcut on its button.
    """
    note_key = f"{key}-note"
    st.text_input("Note (optional)", key=note_key, max_chars=2000, disabled=disabled)

    def _note() -> str:
        return str(st.session_state.get(note_key) or "")

    def _label(value: str) -> None:
        on_label(value, _note())

    def _extra(callback: Callable[[str], None]) -> None:
        callback(_note())

    cols = st.columns(len(LABEL_BUTTONS) + len(extra or []))
    for col, (value, text, sc) in zip(cols, LABEL_BUTTONS):
        col.button(text, key=f"{key}-{value}", on_click=_label, args=(value,),
                   shortcut=sc if shortcuts else None, disabled=disabled,
                   type="primary" if value != "unsure" else "secondary", width="stretch")
    for col, (bkey, text, sc, callback) in zip(cols[len(LABEL_BUTTONS):], extra or []):
        col.button(text, key=f"{key}-{bkey}", on_click=_extra,
                   args=(callback,), shortcut=sc if shortcuts else None, disabled=disabled, width="stretch")

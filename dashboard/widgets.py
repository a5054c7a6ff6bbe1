"""Rendering shared by the pages: header, model panel, the image beside its verdict
(LaDeDa local traces / CLIP GradCAM / plain, numbered top patches), the evidence details
(top patches, poolings, guardrails, timings) and the labelling controls.

Everything renders from a stored :class:`core.review.evidence.Evidence` and
the decoded picture, never from a model pass; pixels come from
:mod:`core.scoring.explain`.
"""
from __future__ import annotations

import base64
import functools
import io
import math
from typing import Any, Callable

import streamlit as st
from PIL import Image

from core.learning.parts import share_sentence
from core.review.clip_maps import ClipMap
from core.review.evidence import Evidence
from core.scoring import clip_cam, explain, faithfulness
from core.scoring.guardrails import provenance
from dashboard import services

# Colour-blind safe pairing (blue vs orange, as in the heatmap's diverging scale), always with an icon
# and a word, so no meaning rests on colour alone.
TIER_STYLE = {
    "real": ("blue", "Real", ":material/verified:"),
    "review": ("violet", "Needs review", ":material/help:"),
    "fake": ("orange", "Fake", ":material/report:"),
}
LABEL_BUTTONS = (  # value, text, keyboard shortcut, icon
    ("real", "Real", "A", ":material/verified:"),  # "A" for authentic: Streamlit reserves R and C
    ("fake", "Fake", "F", ":material/report:"),
    ("unsure", "Unsure", "U", ":material/help:"),
)
#: The picture's views: each map is named for the part it explains.
VIEWS = ("LaDeDa local traces", "CLIP GradCAM", "Plain")
#: Patch blocks averaged by the coarser heatmap view.
COARSE_BLOCK = 4
#: "Auto" heatmap cells: above this many patches per side single patches read as speckle, so blocks are shown.
AUTO_COARSE_ABOVE = 64
CELL_CHOICES = ("Auto", "Single patches", f"{COARSE_BLOCK}×{COARSE_BLOCK} blocks")
#: Width of pictures below the verdict (faces).
IMAGE_WIDTH = 560

_CSS = """
<style>
/* Real and Fake look different (blue / orange, with icons), whatever the colour vision. */
div[class*="-real"] button[kind="primary"], div[class*="-real"] button[kind="secondary"] {
  background-color: #1f5fa8 !important; border-color: #1f5fa8 !important; color: #ffffff !important; }
div[class*="-fake"] button[kind="primary"], div[class*="-fake"] button[kind="secondary"] {
  background-color: #c2570c !important; border-color: #c2570c !important; color: #ffffff !important; }
div[class*="-real"] button:disabled, div[class*="-fake"] button:disabled { opacity: 0.45; }
/* Decision buttons keep their words on narrow screens: the row wraps instead of shrinking to "R… A". */
.st-key-review-actions [data-testid="stHorizontalBlock"], .st-key-inspect-actions [data-testid="stHorizontalBlock"] {
  flex-wrap: wrap; row-gap: 0.4rem; }
.st-key-review-actions [data-testid="stColumn"], .st-key-inspect-actions [data-testid="stColumn"] {
  min-width: 6.5rem; flex: 1 1 6.5rem; }
.st-key-review-actions button p, .st-key-inspect-actions button p { white-space: nowrap; }
/* Streamlit leaves 6rem above the first line; 4rem clears its 3.75rem top bar (opaque on narrow windows) */
[data-testid="stMainBlockContainer"] { padding-top: 4rem; }
/* Narrow screens (800 px): the verdict card's inner columns wrap instead of truncating "P(fake)". */
@media (max-width: 1100px) {
  [class*="-verdict"] [data-testid="stHorizontalBlock"] { flex-wrap: wrap; }
  [class*="-verdict"] [data-testid="stColumn"] { min-width: 8rem; flex: 1 1 8rem; }
}
@media (max-width: 900px) {
  section[data-testid="stSidebar"][data-collapsed="false"] { width: 15rem !important; min-width: 15rem !important; }
  [data-testid="stMainBlockContainer"] { padding-left: 1rem; padding-right: 1rem; }
}
</style>
"""


#: Below this window width the sidebar starts collapsed (Streamlit itself only collapses it on phones).
NARROW_PX = 900
_COLLAPSE_JS = """
<script>
(() => {
  const win = window.parent || window;
  const doc = win.document;
  const bar = () => doc.querySelector('section[data-testid="stSidebar"]');
  // collapse (or, when the window is wide again, re-open what was collapsed here), retrying while the
  // page is still being drawn
  const toggle = (open, tries) => {
    const b = bar();
    const sel = open ? '[data-testid="stExpandSidebarButton"]' : '[data-testid="stSidebarCollapseButton"] button';
    const btn = doc.querySelector(sel);
    if (b && b.getAttribute('data-collapsed') === (open ? 'false' : 'true')) return;
    if (b && btn) { btn.click(); win.__ladedaAutoCollapsed = !open; return; }
    if (tries < 50) setTimeout(() => toggle(open, tries + 1), 100);
  };
  if (win.innerWidth < %d) toggle(false, 0);
  if (win.__ladedaNarrowWatch) return;  // one listener per tab
  win.__ladedaNarrowWatch = true;
  let wide = win.innerWidth >= %d;
  win.addEventListener('resize', () => {
    const now = win.innerWidth >= %d;
    if (wide && !now) toggle(false, 0);
    if (!wide && now && win.__ladedaAutoCollapsed) toggle(true, 0);
    wide = now;
  });
})();
</script>
""" % (NARROW_PX, NARROW_PX, NARROW_PX)


def style() -> None:
    """The app's few style rules (button colours, wrapping at narrow widths); on a narrow window the
    sidebar starts collapsed, once per session, so the page keeps its width (the chevron opens it)."""
    st.html(_CSS)
    if not st.session_state.get("_sidebar_checked"):
        st.session_state["_sidebar_checked"] = True
        st.html(_COLLAPSE_JS, unsafe_allow_javascript=True)


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


def credentials_panel(where: Any) -> None:
    """Settings: the Content Credentials library and trust list in force. Read only: trusting a signer is an
    administrator's act (the PEM bundle named by the environment), never a button on an analyst's page."""
    s = provenance.credentials_status()
    trust = s["trust_list"]
    with where.expander("Settings: Content Credentials"):
        if s["library"]:
            st.caption(f"Verified with {s['library']}, offline: no OCSP, no remote manifests.")
        else:
            st.warning(f"Content Credentials are not verified: {s['unavailable']}.", icon=":material/warning:")
        if trust["error"]:
            st.warning(f"Trust list unusable: {trust['error']}. Every signer counts as not on your trust list.",
                       icon=":material/warning:")
        elif trust["path"]:
            st.caption(f"Trust list `{trust['path']}`: {len(trust['certificates'])} certificate(s)")
            st.markdown("\n".join(f"- `{c}`" for c in trust["certificates"]))
        else:
            st.caption("No trust list configured: every signer is reported as not on your trust list, so no "
                       "credential decides a verdict.")
        st.caption(f"Administrators: put the PEM certificates of the issuers your team trusts (a vendor's root or "
                   f"intermediate CA) in one bundle and name it with `{s['env']}`. It applies from the next "
                   "scoring; stored verdicts keep the list in force when they were scored.")


def header(active: services.ActiveDetector | None, who: services.Identity | None) -> None:
    """One quiet line at the top of every page: the model's name and version, and who is reviewing.

    Hashes, the calibration and the preprocessing are an administrator's details: they stay in the
    sidebar's model panel and on the Calibration page."""
    parts = []
    if active is not None:
        s = services.model_summary(active)
        parts.append(f"**{s['label']}** {s['version']}")
    else:
        parts.append("**no model loaded**")
    parts.append(f"reviewer **{who.display}**" if who else "reviewer **not set**")
    with st.container(key="app-header"):
        st.caption(" · ".join(parts))


# ---------------------------------------------------------------------------
# verdict
# ---------------------------------------------------------------------------
def verdict_card(ev: Evidence, *, key: str, pending: bool = False, stale_note: str | None = None) -> None:
    """Tier with its reasons, calibrated probability, the thresholds that decided it, and whose item it is."""
    colour, text, icon = TIER_STYLE.get(ev.tier, ("gray", ev.tier, ":material/help:"))
    tiers = ev.decision.get("thresholds") or {}
    with st.container(border=True, key=f"{key}-verdict"):
        a, b = st.columns([1.2, 1.0])
        with a:
            st.caption("Verdict" + (" (provisional)" if pending else ""))
            st.markdown(f"### :{colour}[{icon} {text}]")
            st.caption(f"{ev.name} · `{ev.sha256[:12]}`")
        with b:
            what = "calibrated probability of fake" if ev.calibrated else "probability of fake (uncalibrated sigmoid)"
            st.metric("P(fake)", f"{ev.probability:.1%}", help=what)
            st.caption(f"logit {ev.logit:+.3f} · {'calibrated' if ev.calibrated else 'uncalibrated'}")
        # Always the same elements in the same order (absent ones as empty slots): the card is redrawn in
        # place when the guardrails finish, and a shorter second drawing would leave the first one's tail.
        slots = [st.empty() for _ in range(6)]
        shares = share_sentence(ev.extra.get("components"))
        if shares:  # what each part contributed to the served logit (the fusion's own terms)
            slots[5].markdown(f"**Who decided:** {shares}",
                              help="Each part's weighted term w·z of the served logit as a share of the parts' "
                                   "total |w·z| (the fusion's intercept excluded); probabilities are each part's own.")
        if tiers:
            slots[0].markdown(f"**Thresholds:** real below **{float(tiers['real_below']):.3f}** · "
                              f"fake at or above **{float(tiers['fake_at_or_above']):.3f}**")
        if pending and ev.extra.get("first_look"):
            slots[1].caption(":material/hourglass_top: Provisional: the CLIP second opinion's reading, with LaDeDa's "
                             "term at its prior (logit 0). LaDeDa's local traces, faces, quality, metadata and "
                             "Content Credentials are coming and may change the tier.")
        elif pending:
            slots[1].caption(":material/hourglass_top: Checking faces, quality, metadata and Content Credentials… "
                             "they can only move the tier to review, unless verified credentials say AI-generated.")
        if ev.decision.get("changed_by_guardrails"):
            base = TIER_STYLE.get(ev.decision.get("base_tier"), ("", ev.decision.get("base_tier"), ""))[1]
            by = ("its Content Credentials" if ev.decision.get("decided_by") == "provenance" else "the guardrails")
            slots[2].markdown(f"The score alone says **{base}**; {by} changed it to **{text}**.")
        if ev.reasons:
            slots[3].markdown("\n".join(f"- {r}" for r in ev.reasons))
        if stale_note:
            slots[4].caption(stale_note)


# ---------------------------------------------------------------------------
# the picture, beside the verdict
# ---------------------------------------------------------------------------
def _share(ev: Evidence, part: str) -> str:
    """" (94 % of this verdict's evidence)" from the stored components, or "" when they carry no share."""
    c = (ev.extra.get("components") or {}).get(part) or {}
    return f" ({100 * float(c['share']):.0f} % of this verdict's evidence)" if "share" in c else ""


def _faithfulness(part: str) -> str:
    note = faithfulness.caption_note(part)
    return f" {note}" if note else ""


@functools.lru_cache(maxsize=16)
def _legend_uri(limit: float) -> str:
    """The colour scale depends only on its range: drawn and encoded once per range."""
    return picture(explain.colour_legend(limit))


def tier_text(tier: str) -> str:
    """The tier in the words the card uses ("Needs review", ...)."""
    return TIER_STYLE.get(tier, ("gray", tier, ""))[1]


def plain_picture(image: Image.Image, *, caption: str) -> None:
    """The picture alone, with no controls (drawn while the maps are still being computed)."""
    st.image(picture(explain.fit_display(image)), caption=caption, alt="the image", width="stretch")


def image_view(ev: Evidence, image: Image.Image | None, *, key: str,
               clip_map: Callable[[bool], ClipMap] | None = None) -> None:
    """The image itself with a switch between LaDeDa's patch map (its local traces), CLIP's GradCAM and
    the plain picture; the most-fake patches are numbered on it (the same numbers as the crops below).

    ``clip_map(compute)`` gives the CLIP map for this verdict (``core.review.clip_maps``): read back
    when stored, computed once (with a spinner) the first time the view is opened."""
    if image is None:
        st.info("The image bytes are not stored for this item; the evidence below comes from the stored scoring.")
        return
    c1, c2 = st.columns([3, 2])
    view = c1.segmented_control("Show", VIEWS, default=VIEWS[0], key=f"{key}-view", label_visibility="collapsed")
    view = view or VIEWS[0]
    with c2.popover("View options", width="stretch"):
        cells = st.segmented_control(
            "LaDeDa map cells", CELL_CHOICES, default="Auto", key=f"{key}-cells",
            help=f"Each block of {COARSE_BLOCK}×{COARSE_BLOCK} patches shows their mean (the image logit is still "
                 f"the mean of all patches). Auto shows blocks when the map has more than {AUTO_COARSE_ABOVE} "
                 "patches per side, where single patches read as speckle.") or "Auto"
        marks = st.toggle("Number LaDeDa's most-fake patches", value=True, key=f"{key}-marks")
        opacity = st.slider("LaDeDa map opacity", 0.0, 1.0, explain.DEFAULT_OPACITY, 0.05, key=f"{key}-opacity")
        limit = st.select_slider("Colour range (± patch logit; the same on every image)",
                                 options=list(explain.LOGIT_LIMIT_CHOICES), value=explain.DEFAULT_LOGIT_LIMIT,
                                 key=f"{key}-limit")
    # the picture's place, emptied at once on every run: while CLIP's map is computed the view just
    # picked never sits over the previous view's map
    slot, legend = st.empty(), st.empty()  # LaDeDa's colour scale goes under its map only
    geometry = ev.patch_geometry
    h, w = ev.patch_logits.shape
    coarse = cells == CELL_CHOICES[2] or (cells == "Auto" and max(h, w) > AUTO_COARSE_ABOVE)
    if view == VIEWS[0]:
        pm = explain.coarsen(ev.patch_logits, COARSE_BLOCK) if coarse else ev.patch_logits
        shown = explain.heatmap_overlay(image, pm, geometry, ev.model_input_hw, limit=float(limit),
                                        opacity=float(opacity))
        caption = (f"LaDeDa local traces{_share(ev, 'ladeda')}: patch logits over the image ({h}×{w} patches"
                   + (f", shown as means of {COARSE_BLOCK}×{COARSE_BLOCK} blocks" if coarse else "")
                   + (" because the map is this large; View options shows single patches"
                      if coarse and cells == "Auto" else "")
                   + "; LaDeDa's image logit is their mean"
                   + ("; the verdict also weighs the CLIP second opinion)" if (ev.extra.get("components") or {}).get("clip")
                      else ")") + "." + _faithfulness("ladeda_patch"))
        alt = "LaDeDa local traces"
    elif view == VIEWS[1]:
        got = clip_map(False) if clip_map is not None else ClipMap(None, "CLIP's map is not available here.")
        if got.cam is None and got.note is None and clip_map is not None:  # not computed yet: once, then stored
            slot.image(picture(explain.fit_display(image)), alt="the image", width="stretch",
                       caption=f"{ev.name}: CLIP's GradCAM is being computed…")
            with st.spinner("Computing CLIP's GradCAM (one pass through the CLIP tower and back)…"):
                got = clip_map(True)
        if got.cam is None:
            shown, caption, alt = explain.fit_display(image), f"No CLIP map: {got.note}", "the image"
        else:
            cam = got.cam
            shown = clip_cam.cam_overlay(image, cam)
            caption = (f"CLIP GradCAM{_share(ev, 'clip')}: where the CLIP second opinion found evidence for its "
                       f"call ({cam.target}), GradCAM of its head's logit at {cam.layer}, normalised per image. "
                       f"{cam.describe_area()}." + _faithfulness("clip_gradcam"))
            alt = "CLIP GradCAM overlay"
    else:
        shown, caption, alt = explain.fit_display(image), f"{ev.name} as uploaded", "the image"
    if marks and ev.top_patches and view != VIEWS[1]:  # LaDeDa's patches are not drawn on CLIP's map
        shown = explain.draw_numbered(shown, [p.box for p in ev.top_patches], source_size=ev.image_size)
    slot.image(picture(shown), caption=caption, alt=alt, width="stretch")
    if view == VIEWS[0]:
        legend.image(_legend_uri(float(limit)), alt="heatmap colour scale")


# ---------------------------------------------------------------------------
# details below
# ---------------------------------------------------------------------------
def top_patches_panel(ev: Evidence, image: Image.Image | None) -> None:
    if image is None or not ev.top_patches:
        st.caption("No patches." if not ev.top_patches else "The image is not stored; no crops.")
        return
    crops = explain.top_patch_crops(image, ev.top_patches)
    cols = st.columns(len(crops))
    for col, crop in zip(cols, crops):
        x0, y0, x1, y1 = crop.box
        col.image(picture(crop.image), alt=f"top patch {crop.rank}")
        col.caption(f"#{crop.rank} logit {crop.logit:+.2f} · ({x0},{y0})–({x1},{y1})")


def poolings_panel(ev: Evidence) -> None:
    pool = ev.poolings
    st.caption("The model's score is the **mean** of all patch logits. Max and top-k are shown only to tell "
               "whether a small region drives it; they are not probabilities of the image and are not calibrated.")
    rows = [
        {"pooling": "mean (the model's image logit)", "logit": pool.get("mean", ev.logit)},
        {"pooling": "max patch", "logit": pool.get("max", math.nan)},
        {"pooling": f"top-k mean (k={int(pool.get('topk_k', 0))})", "logit": pool.get("topk_mean", math.nan)},
    ]
    for r in rows:
        r["sigmoid"] = 1 / (1 + math.exp(-max(-700.0, min(700.0, r["logit"])))) if math.isfinite(r["logit"]) else None
    _table([{"pooling": r["pooling"], "logit": _num(r["logit"], "{:+.3f}"),
             "sigmoid (uncalibrated)": _num(r["sigmoid"], "{:.3f}")} for r in rows])


def _num(v: Any, fmt: str) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(float(v))


def _table(rows: list[dict[str, Any]]) -> None:
    """A small static table (markdown): a few rows do not need an interactive grid, which costs the
    browser far more to draw on every item."""
    if not rows:
        return
    cols = list(rows[0])
    esc = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(esc(r.get(c, "")) for c in cols) + " |" for r in rows]
    st.markdown("\n".join(lines))


def guardrail_panel(ev: Evidence, image: Image.Image | None) -> None:
    """Faces with their own scores, image quality and metadata evidence, from the stored report."""
    report = ev.guardrails
    if report is None:
        st.caption("Guardrails have not run yet.")
        return
    hi = float((ev.decision.get("thresholds") or {}).get("fake_at_or_above", 0.5))
    faces = report.get("faces") or []
    c1, c2 = st.columns([3, 2])
    with c1:
        if faces:
            if image is not None:
                boxes = []
                for i, f in enumerate(faces, 1):
                    sc = f.get("score")
                    text = f"face {i}: " + (f"P(fake) {sc:.2f}" if sc is not None else "not scored")
                    colour = (194, 87, 12) if (sc is not None and sc >= hi) else (31, 95, 168)
                    boxes.append(explain.LabelledBox(tuple(int(v) for v in f["box"]), text, colour))
                st.image(picture(explain.draw_boxes(image, boxes)), alt="faces", width=IMAGE_WIDTH,
                         caption=f"{len(faces)} face(s); each crop is scored on its own by the same model")
            _table([{"face": i, "P(fake)": _num(f.get("score"), "{:.3f}"), "logit": _num(f.get("logit"), "{:+.2f}"),
                     "detection": _num(f.get("confidence"), "{:.2f}"), "found by": f.get("pass") or "",
                     "box": str(tuple(f["box"]))} for i, f in enumerate(faces, 1)])
        else:
            st.caption("No face found: the verdict is about the whole image.")
    with c2:
        q = report.get("quality") or {}
        flag = lambda bad: " ⚠" if bad else ""  # noqa: E731
        w, h = (q.get("effective_resolution") or ev.image_size or (0, 0))[:2]
        mi = q.get("model_input")
        st.markdown("**Quality**")
        lines = [f"- Sharpness (blur measure): **{float(q.get('blur', report.get('blur', 0.0))):.0f}**"
                 f"{flag(q.get('blurry'))}",
                 "- JPEG quality: " + (f"**{float(q['jpeg_quality']):.0f}**{flag(q.get('low_jpeg_quality'))}"
                                       if q.get("jpeg_quality") is not None else "not a JPEG"),
                 f"- Resolution: **{w}×{h}**" + (f" (model input {mi[1]}×{mi[0]})" if mi else "")
                 + (" — upscaled for the model" if q.get("upscaled") else "")
                 + (" — too small to judge" if q.get("too_small") and not q.get("heavily_upscaled") else "")
                 + flag(q.get("heavily_upscaled") or q.get("too_small"))]
        lines += [f"- Screenshot hint: {hint}" for hint in q.get("screenshot_hints") or []]
        st.markdown("\n".join(lines))
        meta = report.get("metadata") or {}
        st.markdown("**Metadata evidence**")
        st.markdown("\n".join(f"- {line}" for line in meta.get("evidence") or ["No metadata evidence."]))
        if meta.get("exif") or meta.get("text_chunks") or meta.get("xmp_hints"):
            with st.popover("Raw metadata"):
                st.json({k: meta.get(k) for k in ("exif", "text_chunks", "xmp_hints", "c2pa")}, expanded=True)
    provenance_panel(report.get("provenance"))


#: How each provenance decision reads on the panel.
PROVENANCE_HEADLINE = {
    "ai_generated": ":orange[:material/report: Generated by an AI model, per verified credentials]",
    "ai_edited": ":violet[:material/help: Partly generated, per verified credentials]",
    "unverified": ":violet[:material/help: Present but not verified: proves nothing either way]",
    "none": ":blue[:material/verified: Verified; no AI generation claimed]",
}


def provenance_panel(prov: dict[str, Any] | None) -> None:
    """The C2PA manifest as the library verified it: who signed, what is claimed, what of it holds."""
    st.markdown("**Content Credentials (C2PA)**")
    if not prov:
        st.caption("Not checked for this scoring (scored before credentials were verified): re-score to check.")
        return
    if not prov.get("present"):
        st.caption(" ".join(prov.get("evidence") or []) + (" " if prov.get("evidence") else "")
                   + "No Content Credentials: absence proves nothing (most files carry none, and they are easily "
                   "stripped).")
        return
    st.markdown(PROVENANCE_HEADLINE.get(prov.get("decision"), prov.get("decision") or ""))
    check = lambda v, yes, no: "—" if v is None else (f"✓ {yes}" if v else f"✗ {no}")  # noqa: E731
    rows = [("Signer", prov.get("signer") or "—"), ("Issued by", prov.get("issuer") or "—"),
            ("Made with", prov.get("claim_generator") or "—"),
            ("Signed at", prov.get("signed_at") or "no trusted timestamp"),
            ("Declared source", ", ".join(prov.get("source_types") or []) or "—"),
            ("Signature", check(prov.get("signature_valid"), "valid", "invalid")),
            ("Hash binding", check(prov.get("binding_intact"), "intact", "broken: edited after signing")),
            ("Signer trust", check(prov.get("trusted"), "on your trust list", "not on your trust list"))]
    rows += [("Action", _action_text(a)) for a in prov.get("actions") or []]
    if prov.get("remote_url"):
        rows.append(("Remote manifest", f"{prov['remote_url']} (not fetched: offline)"))
    _table([{"field": k, "Content Credentials": v} for k, v in rows])
    for problem in prov.get("problems") or []:
        st.caption(f":material/warning: Not verified: {problem}")
    if prov.get("note"):
        st.caption(prov["note"])


def _action_text(a: dict[str, Any]) -> str:
    text = str(a.get("action") or "")
    for key, fmt in (("source_type", " ({})"), ("software_agent", " with {}"), ("description", ": {}")):
        if a.get(key):
            text += fmt.format(a[key])
    if a.get("regions"):
        text += "; regions: " + "; ".join(a["regions"])
    if a.get("ingredient"):
        text += f" [{a['ingredient']}]"
    return text


def timings_panel(ev: Evidence, render_ms: float | None = None) -> None:
    t = dict(ev.timings_ms)
    for k, v in ((ev.guardrails or {}).get("timings_ms") or {}).items():
        t[f"guardrails: {k}"] = v
    if render_ms is not None:
        t["shown from the store (this page)"] = render_ms
    _table([{"step": k, "ms": _num(v, "{:.1f}")} for k, v in t.items()])


def details(ev: Evidence, image: Image.Image | None, *, key: str, render_ms: float | None = None) -> None:
    """Everything below the image and verdict: numbered crops, guardrails, poolings, timings."""
    st.markdown("**Most-fake patches** (numbered as on the image)")
    top_patches_panel(ev, image)
    with st.expander("Guardrails: faces, quality, metadata, Content Credentials", expanded=True):
        guardrail_panel(ev, image)
    with st.expander("Poolings: why the max patch can say 1.000 while P(fake) is lower"):
        poolings_panel(ev)
    with st.expander("Timings"):
        timings_panel(ev, render_ms)


#: Pictures up to this many pixels (legends, crops, thumbnails) go as PNG: crisp text, a few KB.
PNG_MAX_PIXELS = 200 * 200
#: JPEG quality of larger pictures: Streamlit's own encoding uses 100, about 8x the bytes for no visible gain.
JPEG_QUALITY = 85


def picture(image: Image.Image) -> str:
    """An image as a data URI for ``st.image``: inline in the page, so it arrives with the element
    instead of as a separate media request (those wait for the server while a script runs), and
    encoded once at a sensible size (PNG for small pictures and transparency, else JPEG q85)."""
    buf = io.BytesIO()
    if image.mode in ("RGBA", "LA", "P") or image.width * image.height <= PNG_MAX_PIXELS:
        image.save(buf, "PNG", optimize=False, compress_level=3)
        mime = "png"
    else:
        image.convert("RGB").save(buf, "JPEG", quality=JPEG_QUALITY)
        mime = "jpeg"
    return f"data:image/{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail_uri(data: bytes | None, side: int = 56) -> str | None:
    """A small data URI (:func:`picture`) of an image's bytes, for lists of decisions and neighbours."""
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (side * 2, side * 2))
            thumb = img.convert("RGB")
            thumb.thumbnail((side, side))
    except Exception:  # noqa: BLE001 - a list entry without a picture is fine
        return None
    return picture(thumb)


@st.cache_data(max_entries=1024, show_spinner=False)
def stored_thumbnail(_store: Any, sha256: str, side: int = 56) -> str | None:
    """:func:`thumbnail_uri` of a stored item, made once per process: the key is the SHA-256 of the
    bytes, so it holds in every store. Lists of decisions and neighbours redraw on every rerun."""
    return thumbnail_uri(_store.image_bytes(sha256), side=side)


# ---------------------------------------------------------------------------
# labelling controls
# ---------------------------------------------------------------------------
def label_controls(*, key: str, on_label: Callable[..., None], args: tuple[Any, ...] = (),
                   shortcuts: bool = False,
                   extra: list[tuple[str, str, str | None, Callable[..., None]]] | None = None,
                   disabled: bool = False) -> None:
    """Real / Fake / Unsure buttons (plus ``extra`` buttons) with a note field.

    Clicks run as callbacks before the next render: ``on_label(*args, label, note)``; ``extra`` items
    are ``(key, text, shortcut, callback(*args, note))``. ``args`` carries the item the buttons belong
    to (its sha), so a click can only act on the item whose evidence was on screen.
    """
    note_key = f"{key}-note"
    st.text_input("Note (optional)", key=note_key, max_chars=2000, disabled=disabled)

    def _note() -> str:
        return str(st.session_state.get(note_key) or "")

    def _label(value: str) -> None:
        on_label(*args, value, _note())

    def _extra(callback: Callable[..., None]) -> None:
        callback(*args, _note())

    cols = st.columns(len(LABEL_BUTTONS) + len(extra or []))
    for col, (value, text, sc, icon) in zip(cols, LABEL_BUTTONS):
        col.button(text, key=f"{key}-{value}", on_click=_label, args=(value,), icon=icon,
                   shortcut=sc if shortcuts else None, disabled=disabled,
                   type="primary" if value != "unsure" else "secondary", width="stretch")
    for col, (bkey, text, sc, callback) in zip(cols[len(LABEL_BUTTONS):], extra or []):
        col.button(text, key=f"{key}-{bkey}", on_click=_extra,
                   args=(callback,), shortcut=sc if shortcuts else None, disabled=disabled, width="stretch")


# ---------------------------------------------------------------------------
# what the forensics panels read
# ---------------------------------------------------------------------------
class _StoredReport:
    """The stored guardrail report, answering ``to_json()`` like a ``GuardrailReport``."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def to_json(self) -> dict[str, Any]:
        return dict(self._data)


def forensics_subject(ev: Evidence, decoded: Any, analysis: Any = None, *, extras: dict[str, Any]) -> Any:
    """The object ``dashboard.forensics_panels`` reads (``analysis``, ``name``, ``data_sha256``,
    ``extras``), built from stored evidence. Without a fresh analysis, the stored decision and report
    stand in, and the score names no bytes, so a report built from it recomputes what it needs."""
    from types import SimpleNamespace

    if analysis is None:
        analysis = SimpleNamespace(
            decoded=decoded, guardrails=_StoredReport(ev.guardrails) if ev.guardrails is not None else None,
            decision=SimpleNamespace(tier=ev.tier, reasons=ev.reasons, to_json=lambda: dict(ev.decision)),
            score=SimpleNamespace(sha256="", model={}, probability=ev.probability, logit=ev.logit))
    return SimpleNamespace(analysis=analysis, name=ev.name, data_sha256=ev.sha256, extras=extras)

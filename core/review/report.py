"""Evidence report per item: one self-contained HTML file that reproduces the verdict and
carries the item's whole history under a hash chain, and the verifier that checks a report
against the store.

What the file holds: the image (its original bytes when a browser can show
them, so anyone can hash them) and its SHA-256; the model, calibration and
preprocessing identity; the verdict recomputed now with its reasons, compared
with the verdict stored at scoring time; heatmap, most-fake patches,
poolings, guardrails, the stability probe and the forensic views; the
per-segment reliability line; and every upload, scoring, queue and label
event with who and when.

The hash chain: each event is one canonical line (``time``, ``source``,
``event``, ``who``, ``details`` joined by tabs; details are compact sorted
JSON), and its hash is ``sha256(previous hash + "\\n" + line)``, starting from
``sha256("ladeda-evidence-chain/v1\\n" + item sha256)``. Each row of the
event table shows exactly those cells and its hash, so changing one byte of
an event breaks that row's hash. :func:`verify_report` recomputes the chain
from the rows, then compares every row with the event the store holds (an
edit that also recomputes the hashes is caught there) and the embedded image
with its stated hash. Events recorded after the report was made are reported,
not treated as tampering.
"""
from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import html
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from PIL import Image

from core.errors import DetectorError

if TYPE_CHECKING:  # pragma: no cover
    from core.review.store import ReviewStore
    from core.scoring.detector import Detector

CHAIN_VERSION = "ladeda-evidence-chain/v1"
REPORT_FORMAT = "ladeda-evidence-report/1"
#: Original bytes up to this size are embedded as they are (else a PNG rendering is shown).
EMBED_MAX_BYTES = 20_000_000
_BROWSER_FORMATS = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
                    ".gif": "image/gif", ".bmp": "image/bmp"}
_CELLS = ("t", "src", "ev", "who", "det")


class ReportError(DetectorError):
    """A report that cannot be made or read (message is for analysts)."""

    code = "report_error"


# ---------------------------------------------------------------------------
# events and the chain
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class EventLine:
    time: str
    source: str  #: upload, scoring, queue or label
    event: str
    who: str
    details: str  #: compact sorted JSON

    @property
    def cells(self) -> tuple[str, str, str, str, str]:
        return self.time, self.source, self.event, self.who, self.details

    @property
    def line(self) -> str:
        return "\t".join(self.cells)


def _details(fields: Mapping[str, Any]) -> str:
    clean = {k: v for k, v in fields.items() if v is not None}
    return json.dumps(clean, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_lines(item: Mapping[str, Any]) -> list[EventLine]:
    """Every upload, scoring, queue and label event of a store item (``store.item(sha)``), in time order.

    Only named fields are read, so columns a newer store adds do not change old lines.
    """
    rows: list[tuple[str, int, int, EventLine]] = []
    for i, u in enumerate(item.get("uploads") or []):
        rows.append((str(u.get("uploaded_at") or ""), 0, i, EventLine(
            str(u.get("uploaded_at") or ""), "upload", "uploaded", str(u.get("uploader") or ""),
            _details({"name": u.get("name")}))))
    for i, s in enumerate(item.get("scorings") or []):
        rows.append((str(s.get("scored_at") or ""), 1, i, EventLine(
            str(s.get("scored_at") or ""), "scoring", "scored", "", _details({
                "id": s.get("id"), "model_sha256": s.get("model_sha256"), "model": s.get("model_label"),
                "calibration_version": s.get("calibration_version"),
                "preprocess_fingerprint": s.get("preprocess_fingerprint"), "logit": s.get("logit"),
                "probability": s.get("probability"), "tier": s.get("tier")}))))
    for i, e in enumerate(item.get("label_events") or []):
        rows.append((str(e.get("created_at") or ""), 2, i, EventLine(
            str(e.get("created_at") or ""), "label", str(e.get("kind") or ""), str(e.get("reviewer") or ""),
            _details({"id": e.get("id"), "label": e.get("label"), "undoes": e.get("undoes"), "note": e.get("note"),
                      "seconds_spent": e.get("seconds_spent"), "scoring_id": e.get("scoring_id")}))))
    for i, q in enumerate(item.get("queue_events") or []):
        rows.append((str(q.get("at") or ""), 3, i, EventLine(
            str(q.get("at") or ""), "queue", str(q.get("event") or ""), str(q.get("actor") or ""),
            _details({"lease_expires_at": q.get("lease_expires_at"), "detail": q.get("detail")}))))
    rows.sort(key=lambda r: r[:3])
    return [r[3] for r in rows]


def genesis(sha256: str) -> str:
    return hashlib.sha256(f"{CHAIN_VERSION}\n{sha256}".encode()).hexdigest()


def link(previous: str, line: str) -> str:
    return hashlib.sha256(f"{previous}\n{line}".encode("utf-8")).hexdigest()


def chain(sha256: str, lines: Sequence[EventLine]) -> list[str]:
    """The hash of each line, chained from the item's genesis hash."""
    out, h = [], genesis(sha256)
    for ev in lines:
        h = link(h, ev.line)
        out.append(h)
    return out


# ---------------------------------------------------------------------------
# building the report
# ---------------------------------------------------------------------------
@dataclass
class Report:
    sha256: str
    html: str
    head: str  #: hash of the last event line (the chain head)
    events: list[EventLine]
    generated_at: str
    reproduced: bool | None  #: the recomputed probability equals the stored one (same model), None if not comparable

    def write(self, path: str | os.PathLike) -> Path:
        """Write atomically (temporary file beside it, then rename): a reader never sees half a report."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.html.encode("utf-8"))
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _png_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "PNG", optimize=False, compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _section(title: str, body: str) -> str:
    return f'<section><h2>{_e(title)}</h2>\n{body}\n</section>'


def _table(rows: Sequence[Sequence[Any]], head: Sequence[str] | None = None, cls: str = "") -> str:
    out = [f'<table class="{cls}">' if cls else "<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>")
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1f2328;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}td,th{border:1px solid #d0d7de;padding:.25em .5em;
vertical-align:top;text-align:left}th{background:#f6f8fa}
code,.mono,table.events td{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.82em;word-break:break-all}
.tier-real{color:#1a7f37}.tier-review{color:#9a6700}.tier-fake{color:#cf222e}
figure{display:inline-block;margin:.5em;vertical-align:top;max-width:48%}figure img{max-width:100%}
figcaption{font-size:.85em;color:#57606a}.note{color:#57606a;font-size:.9em}
.warn{background:#fff8c5;padding:.4em .6em;border:1px solid #d4a72c}
"""


def _image_block(raw: bytes | None, item: Mapping[str, Any], decoded_image: Image.Image | None) -> str:
    sha = item["sha256"]
    ext = str(item.get("ext") or "").lower()
    if raw is not None and item.get("storage") == "original" and ext in _BROWSER_FORMATS \
            and len(raw) <= EMBED_MAX_BYTES and hashlib.sha256(raw).hexdigest() == sha:
        uri = f"data:{_BROWSER_FORMATS[ext]};base64," + base64.b64encode(raw).decode("ascii")
        return (f'<figure style="max-width:100%"><img id="original" data-kind="original" data-sha256="{sha}" '
                f'src="{uri}" alt="the image"><figcaption>The original bytes ({len(raw):,} bytes, {_e(ext)}): '
                f"save the image and its SHA-256 is the one above.</figcaption></figure>")
    if decoded_image is not None:
        from core.scoring.explain import fit_display

        why = ("privacy mode: only a thumbnail is stored" if item.get("storage") == "thumbnail" else
               "the original format is not one a browser shows, or it is too large to embed")
        return (f'<figure style="max-width:100%"><img id="original" data-kind="rendering" '
                f'src="{_png_uri(fit_display(decoded_image))}" alt="the image (rendering)">'
                f"<figcaption>A PNG rendering, not the original bytes ({_e(why)}).</figcaption></figure>")
    return '<p class="warn">The image bytes are not stored for this item.</p>'


def _identity_block(detector: "Detector") -> str:
    ident = detector.identity
    tiers = detector.checkpoint.tiers or {}
    rows = [("Model", f"{ident['label']} (file {Path(ident['path']).name if ident.get('path') else '—'})"),
            ("Model SHA-256", ident["sha256"]),
            ("Calibration", f"{ident['calibration_version'] or 'none'} ({ident['calibration_method'] or 'sigmoid'})"),
            ("Preprocessing", f"{ident['preprocess_summary']} · fingerprint {ident['preprocess_fingerprint']}"),
            ("Tier thresholds", f"real below {tiers['real_below']}, fake at or above {tiers['fake_at_or_above']}"
             if tiers.get("real_below") is not None else "none (policy defaults)")]
    return _table(rows)


def _verdict_block(analysis: Any, stored: Mapping[str, Any] | None, probe_json: Mapping[str, Any] | None,
                   reproduced: bool | None) -> str:
    from core.learning.parts import share_sentence
    from core.scoring.probe import with_stability

    d = analysis.decision
    if probe_json:
        d = with_stability(d, dict(probe_json))
    s = analysis.score
    v = analysis.verdict()  # the served values the tier was decided on (fused when CLIP fused)
    out = [f'<p>Verdict now: <strong class="tier-{_e(d.tier)}">{_e(d.tier)}</strong> · P(fake) '
           f"<strong>{v['probability']:.4f}</strong> ({'calibrated' if v['calibrated'] else 'uncalibrated sigmoid'}) · "
           f"logit {v['logit']:+.4f} · tier from the thresholds alone: {_e(d.base_tier)}</p>",
           "<ul>" + "".join(f"<li>{_e(r)}</li>" for r in d.reasons) + "</ul>"]
    shares = share_sentence(analysis.served.components if getattr(analysis, "served", None) else None)
    if shares:
        out.append(f"<p>Who decided: {_e(shares)} (each part's weighted term w·z of the served logit, as a share "
                   "of the parts' total |w·z|; the fusion's intercept excluded).</p>")
    if stored:
        same = stored.get("model_sha256") == s.model.get("sha256")
        out.append(f"<p>Stored at scoring time ({_e(stored.get('scored_at'))}, model "
                   f"<code>{_e(str(stored.get('model_sha256') or '')[:12])}</code>, calibration "
                   f"{_e(stored.get('calibration_version') or 'none')}): tier <strong>{_e(stored.get('tier'))}"
                   f"</strong>, P(fake) {float(stored.get('probability') or 0):.4f}. "
                   + ("Reproduced: the same model gives the same probability now." if reproduced else
                      "<span class='warn'>Not reproduced: the same model gives another probability now.</span>"
                      if same else "Scored by another model or calibration than the one used for this report.")
                   + "</p>")
    return "\n".join(out)


def _share(analysis: Any, part: str) -> str:
    c = ((analysis.served.components if getattr(analysis, "served", None) else None) or {}).get(part) or {}
    return f" ({100 * float(c['share']):.0f} % of this verdict's evidence)" if "share" in c else ""


def _clip_map_block(analysis: Any, detector: "Detector", store: "ReviewStore | None") -> str:
    """CLIP's GradCAM for the verdict recomputed here (read back when stored for this encoder and head)."""
    from core.review.clip_maps import clip_map_for
    from core.scoring import clip_cam, faithfulness

    s = analysis.score
    got = clip_map_for(detector, store, sha256=s.sha256, model_sha256=str(s.model.get("sha256") or ""),
                       components=analysis.served.components if getattr(analysis, "served", None) else None,
                       image=analysis.decoded.image)
    if got.cam is None:
        return f"<p>No CLIP map: {_e(got.note)}</p>"
    cam = got.cam
    note = faithfulness.caption_note("clip_gradcam")
    return (f'<figure><img src="{_png_uri(clip_cam.cam_overlay(analysis.decoded.image, cam))}" alt="CLIP GradCAM">'
            f"<figcaption>CLIP GradCAM{_e(_share(analysis, 'clip'))}: where the CLIP second opinion found evidence "
            f"for its call ({_e(cam.target)}), GradCAM of its head's logit at {_e(cam.layer)}, normalised per image. "
            f"{_e(cam.describe_area())}." + (f" {_e(note)}" if note else "") + "</figcaption></figure>")


def _evidence_block(analysis: Any, detector: "Detector") -> str:
    from core.scoring import explain, faithfulness

    s, image = analysis.score, analysis.decoded.image
    heat = explain.heatmap_for_score(image, s, detector.geometry)
    note = faithfulness.caption_note("ladeda_patch")
    parts = [f'<figure><img src="{_png_uri(heat)}" alt="LaDeDa local traces"><figcaption>LaDeDa local traces'
             f"{_e(_share(analysis, 'ladeda'))}: patch logits over the image "
             f"({s.patch_map_shape[0]}×{s.patch_map_shape[1]} patches, fixed scale ±{explain.DEFAULT_LOGIT_LIMIT:g}; "
             "LaDeDa's image logit is their mean; blue real, red fake)." + (f" {_e(note)}" if note else "")
             + "</figcaption></figure>"]
    crops = explain.top_patch_crops(image, s.top_patches)
    for c in crops:
        parts.append(f'<figure style="max-width:18%"><img src="{_png_uri(c.image)}" alt="top patch {c.rank}">'
                     f"<figcaption>#{c.rank} logit {c.logit:+.3f}, box {tuple(c.box)}</figcaption></figure>")
    pool = s.poolings
    parts.append(_table([("mean (the model's image logit)", f"{pool['mean']:+.4f}"), ("max patch", f"{pool['max']:+.4f}"),
                         (f"top-k mean (k={int(pool.get('topk_k', 0))})", f"{pool['topk_mean']:+.4f}")],
                        ["pooling", "logit"]))
    return "\n".join(parts)


def _guardrail_block(analysis: Any) -> str:
    g = analysis.guardrails
    if g is None:
        return "<p>Guardrails were not run.</p>"
    q = g.quality
    rows = [("Faces", f"{len(g.faces)}" + (": " + "; ".join(
        f"box {tuple(f.box)} P(fake) {f.score:.3f}" if f.score is not None else f"box {tuple(f.box)} not scored"
        for f in g.faces) if g.faces else "")),
            ("Sharpness (blur measure)", f"{q.blur:.0f}" + (" (blurry)" if q.blurry else "")),
            ("JPEG quality", "not a JPEG" if q.jpeg_quality is None else f"{q.jpeg_quality:.0f}"),
            ("Resolution", f"{q.width}×{q.height}")]
    rows += [("Metadata", line) for line in g.metadata.evidence()]
    prov = g.provenance
    rows += [("Content Credentials", line) for line in prov.evidence()]
    if prov.present:
        rows.append(("Content Credentials decision", f"{prov.decision} (signature valid: {prov.signature_valid}, "
                     f"hash binding intact: {prov.binding_intact}, signer trusted: {prov.trusted}; "
                     f"trust list: {prov.trust_list or 'none configured'})"))
    return _table(rows)


def _probe_block(probe_json: Mapping[str, Any] | None, origin: str) -> str:
    if not probe_json:
        return "<p>No stability probe.</p>"
    rows = [(v["name"], "—" if v.get("probability") is None else f"{v['probability']:.4f}", v.get("tier") or "—",
             "flip" if v.get("flipped") else (v.get("skipped") or ""), v.get("edit") or "")
            for v in [probe_json["original"], *probe_json["variants"]]]
    return (f"<p>{_e(probe_json.get('summary'))} <span class='note'>({_e(origin)})</span></p>"
            + _table(rows, ["variant", "P(fake)", "tier", "", "edit"]))


def _forensics_block(analysis: Any, detector: "Detector") -> str:
    from core.scoring.forensics import forensic_layers

    parts = ["<p class='note'>Evidence only: none of these views feeds the tier.</p>"]
    for layer in forensic_layers(analysis.decoded, detector.spec):
        parts.append(f'<figure><img src="{_png_uri(layer.image)}" alt="{_e(layer.title)}"><figcaption>'
                     f"<strong>{_e(layer.title)}.</strong> {_e(layer.shows)} <em>How it misleads:</em> "
                     f"{_e(layer.misleads)}</figcaption></figure>")
    return "\n".join(parts)


def _events_block(sha: str, lines: Sequence[EventLine], hashes: Sequence[str]) -> str:
    out = ['<table class="events"><tr><th>#</th><th>time (UTC)</th><th>source</th><th>event</th><th>who</th>'
           "<th>details</th><th>hash (chained)</th></tr>"]
    for i, (ev, h) in enumerate(zip(lines, hashes), 1):
        cells = "".join(f'<td class="{c}">{_e(v)}</td>' for c, v in zip(_CELLS, ev.cells))
        out.append(f'<tr class="event" data-seq="{i}"><td>{i}</td>{cells}<td class="h">{h}</td></tr>')
    out.append("</table>")
    head = hashes[-1] if hashes else genesis(sha)
    out.append(f'<p>Chain head: <code id="chain-head">{head}</code> over {len(lines)} events. Each hash is '
               f"sha256(previous hash + newline + the row's cells joined by tabs), starting from "
               f"sha256(\"{CHAIN_VERSION}\" + newline + the image SHA-256). Check this file against the store with "
               f"<code>python -m core verify-report --db DB FILE.html</code>.</p>")
    return "\n".join(out)


def build_report(store: "ReviewStore", sha256: str, detector: "Detector", *, generated_by: str | None = None,
                 probe: bool = True, analysis: Any = None) -> Report:
    """Recompute the evidence for a stored item with ``detector`` and write it with the chained history.

    ``probe``: run the stability probe when none is stored for these weights (six more model
    passes). ``analysis``: an ``Analysis`` of these very bytes by this detector, to reuse (the
    dashboard has one on screen) instead of scoring again.
    """
    from core.model.registry import weights_key
    from core.review.reliability import SegmentTable
    from core.review.store import check_sha256
    from core.scoring.analysis import analyse
    from core.scoring.probe import probe as run_probe
    from core.scoring.probe import stored_probe

    sha = check_sha256(sha256)
    item = store.item(sha)
    lines = event_lines(item)
    hashes = chain(sha, lines)
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    raw = store.image_bytes(sha)
    stored = item.get("latest_scoring")
    if analysis is not None and (analysis.score.sha256 != hashlib.sha256(raw or b"").hexdigest()
                                 or analysis.score.model.get("sha256") != detector.checkpoint.sha256):
        analysis = None  # not of these bytes by this model: recompute
    if analysis is None and raw is not None:
        analysis = analyse(detector, raw, name=item.get("name"))
    reproduced = None
    if analysis is not None and stored and stored.get("model_sha256") == detector.checkpoint.sha256 \
            and item.get("storage") == "original":
        reproduced = abs(float(stored["probability"]) - analysis.probability) <= 1e-6  # the served value
    probe_json, origin = None, ""
    if analysis is not None and probe:
        probe_json = stored_probe(store, sha, weights_key(detector.checkpoint),
                                  model_sha256=detector.checkpoint.sha256)
        origin = "stored with the scoring"
        if probe_json is None:
            probe_json, origin = run_probe(detector, analysis.decoded, name=item.get("name")).to_json(), \
                "computed for this report; not stored"
    body = [f"<h1>Evidence report</h1><p class='mono'>SHA-256 <strong id='sha256'>{sha}</strong></p>",
            f"<p>{_e(item.get('name'))} · {_e(item.get('size'))} bytes · first uploaded {_e(item.get('uploaded_at'))}"
            f" by {_e(item.get('uploader') or 'unknown')} · report made {now}"
            + (f" by {_e(generated_by)}" if generated_by else "") + "</p>",
            _section("Image", _image_block(raw, item, analysis.decoded.image if analysis else None)),
            _section("Model, calibration and preprocessing", _identity_block(detector))]
    if analysis is not None:
        table = SegmentTable.from_store(store)
        rel = table.line(analysis.decision.tier, analysis.guardrails.to_json() if analysis.guardrails else None)
        body += [_section("Verdict", _verdict_block(analysis, stored, probe_json, reproduced)
                          + f"<p>Reliability: {_e(rel.text)}</p>"),
                 _section("CLIP GradCAM (the second opinion's map)", _clip_map_block(analysis, detector, store)),
                 _section("LaDeDa local traces: patch map, most-fake patches, poolings",
                          _evidence_block(analysis, detector)),
                 _section("Guardrails", _guardrail_block(analysis)),
                 _section("Stability probe", _probe_block(probe_json, origin)),
                 _section("Forensic views", _forensics_block(analysis, detector))]
    else:
        body.append(_section("Verdict", "<p>The image bytes are not stored, so the verdict cannot be recomputed; "
                                        "the stored scorings are in the history below.</p>"))
    label = item.get("current_label")
    body.append(_section("Label in force", f"<p><strong>{_e(label['label'])}</strong> by {_e(label['reviewer'])} at "
                                           f"{_e(label['labelled_at'])}</p>" if label else "<p>Not labelled.</p>"))
    body.append(_section("History (hash-chained)", _events_block(sha, lines, hashes)))
    doc = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
           f'<meta name="generator" content="{REPORT_FORMAT}"><meta name="ladeda-sha256" content="{sha}">'
           f"<title>Evidence report {sha[:12]}</title><style>{_CSS}</style></head><body>\n"
           + "\n".join(body) + "\n</body></html>\n")
    return Report(sha256=sha, html=doc, head=hashes[-1] if hashes else genesis(sha), events=lines,
                  generated_at=now, reproduced=reproduced)


# ---------------------------------------------------------------------------
# verifying a report
# ---------------------------------------------------------------------------
class _ReportParser(HTMLParser):
    """Collects the stated SHA-256, the embedded image and the event rows of a report."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sha: str | None = None
        self.image: dict[str, str] | None = None
        self.rows: list[dict[str, str]] = []
        self._row: dict[str, str] | None = None
        self._cell: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "meta" and a.get("name") == "ladeda-sha256":
            self.sha = a.get("content")
        elif tag == "img" and a.get("id") == "original":
            self.image = a
        elif tag == "tr" and a.get("class") == "event":
            self._row = {"seq": a.get("data-seq", "")}
        elif tag == "td" and self._row is not None and a.get("class") in (*_CELLS, "h"):
            self._cell, self._text = a["class"], []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._row is not None:
            self._row[self._cell] = "".join(self._text)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None


@dataclass
class Verification:
    ok: bool
    sha256: str | None
    checked: int  #: event rows checked
    later_events: int = 0  #: events in the store recorded after the report
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.ok:
            text = f"Verified: {self.checked} events match their hashes and the store."
            return text + (f" {self.later_events} later event(s) are in the store, not in the report."
                           if self.later_events else "")
        return "NOT verified: " + " ".join(self.problems)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "sha256": self.sha256, "checked": self.checked, "later_events": self.later_events,
                "problems": list(self.problems), "notes": list(self.notes), "summary": self.summary()}


def verify_report(report: str | bytes | os.PathLike, store: "ReviewStore") -> Verification:
    """Check a report's chain, then each of its events and its image against ``store``.

    ``report`` is the HTML (str or bytes) or a path to it.
    """
    if isinstance(report, (str, bytes)) and (isinstance(report, bytes) or report.lstrip().startswith("<")):
        text = report.decode("utf-8", errors="replace") if isinstance(report, bytes) else report
    else:
        try:
            text = Path(report).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ReportError(f"Could not read the report {report}: {exc.strerror or exc}.") from None
    parser = _ReportParser()
    parser.feed(text)
    parser.close()
    sha = (parser.sha or "").strip().lower()
    if not sha or not parser.rows and "ladeda-evidence-report" not in text:
        raise ReportError("This file is not an evidence report (no item SHA-256 or event table found).")
    problems: list[str] = []
    notes: list[str] = []
    # 1. the chain as written
    previous = genesis(sha)
    lines: list[EventLine] = []
    for i, row in enumerate(parser.rows, 1):
        ev = EventLine(*(row.get(c, "") for c in _CELLS))
        lines.append(ev)
        stated = row.get("h", "").strip()
        if link(previous, ev.line) != stated:
            problems.append(f"Event #{i} does not match its hash: it was changed after the report was made.")
        if row.get("seq") != str(i):
            problems.append(f"Event row #{i} is out of sequence (numbered {row.get('seq')!r}).")
        previous = stated
    # 2. against the store
    from core.review.store import StoreError

    try:
        item = store.item(sha)
    except StoreError:
        problems.append(f"The store has no item {sha[:12]}….")
        return Verification(False, sha, len(lines), problems=problems)
    truth = event_lines(item)
    for i, (mine, real) in enumerate(zip(lines, truth), 1):
        if mine != real:
            problems.append(f"Event #{i} differs from the store ({mine.source} {mine.event} at {mine.time} in the "
                            f"report; {real.source} {real.event} at {real.time} in the store).")
    if len(lines) > len(truth):
        problems.append(f"The report lists {len(lines)} events but the store holds only {len(truth)}.")
    later = max(0, len(truth) - len(lines))
    # 3. the image
    img = parser.image or {}
    if img.get("data-kind") == "original":
        src = img.get("src", "")
        try:
            data = base64.b64decode(src.split(",", 1)[1], validate=True)
        except (IndexError, ValueError):
            data = b""
        if hashlib.sha256(data).hexdigest() != sha or img.get("data-sha256", "").lower() != sha:
            problems.append("The embedded image does not hash to the report's SHA-256.")
    else:
        notes.append("The report shows a rendering, not the original bytes; the image was not checked.")
    return Verification(not problems, sha, len(lines), later, problems, notes)

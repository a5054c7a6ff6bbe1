"""Evidence report on a real store and a real model: it holds what an escalation needs, it
verifies, and it fails to verify after one byte of an event is changed — also when the
forger recomputes the chain, and when the image is swapped."""
from __future__ import annotations

import json

import pytest

from core.review.report import _ReportParser, EventLine, chain, event_lines, verify_report
from core.review.store import ReviewStore
from core.scoring.analysis import analyse, record_analysis
from core.scoring.detector import Detector

from .conftest import encode, make_photo, save_random_tiny


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    return Detector.load(save_random_tiny(tmp_path_factory.mktemp("m") / "tiny.pt", seed=3), fast=False)


@pytest.fixture()
def reviewed(tmp_path, detector):
    """A JPEG uploaded, scored, queued, claimed, labelled, undone and labelled again."""
    store = ReviewStore(tmp_path / "review.sqlite")
    data = encode(make_photo(320, 240, seed=5), "JPEG", quality=88)
    analysis = analyse(detector, data, name="suspect.jpg")
    record_analysis(store, analysis, name="suspect.jpg", uploader="intake")
    sha = analysis.score.sha256
    store.enqueue(sha, by="lead", reason="escalated")
    assert store.claim_next("ana")["sha256"] == sha
    store.label(sha, "fake", "ana", note="mouth <blends> into \"cheek\"", seconds_spent=12.5)
    store.undo_last("ana")
    store.label(sha, "real", "ana", note="second look")
    yield store, sha, data
    store.close()


def test_the_report_holds_the_evidence_and_verifies(reviewed, detector):
    from core.review.report import build_report

    store, sha, data = reviewed
    report = build_report(store, sha, detector, generated_by="lead")
    doc = report.html
    assert sha in doc and detector.checkpoint.sha256 in doc and detector.spec.fingerprint() in doc
    for heading in ("Image", "Model, calibration and preprocessing", "Verdict", "Guardrails", "Stability probe",
                    "Forensic views", "History (hash-chained)"):
        assert f"<h2>{heading}</h2>" in doc
    assert "Error level analysis" in doc and "How it misleads" in doc and "Reliability:" in doc
    assert report.reproduced is True and "Reproduced: the same model" in doc
    # every event of the store, in order, with who and when
    item = store.item(sha)
    lines = event_lines(item)
    assert len(report.events) == len(lines) == (len(item["uploads"]) + len(item["scorings"])
                                                + len(item["label_events"]) + len(item["queue_events"]))
    assert [e.event for e in lines if e.source == "label"] == ["label", "undo", "label"]
    assert "mouth &lt;blends&gt; into" in doc and "<blends>" not in doc  # notes are escaped, never markup
    assert report.head == chain(sha, lines)[-1] and report.head in doc
    v = verify_report(doc, store)
    assert v.ok, v.problems
    assert v.checked == len(lines) and v.later_events == 0


def test_one_changed_byte_in_an_event_fails_verification(reviewed, detector):
    from core.review.report import build_report

    store, sha, _ = reviewed
    doc = build_report(store, sha, detector, probe=False).html
    target = '<td class="who">ana</td>'
    assert target in doc
    tampered = doc.replace(target, '<td class="who">anb</td>', 1)  # one byte
    assert len(tampered) == len(doc) and sum(a != b for a, b in zip(doc, tampered)) == 1
    v = verify_report(tampered, store)
    assert not v.ok
    assert any("does not match its hash" in p for p in v.problems)
    assert any("differs from the store" in p for p in v.problems)


def test_a_recomputed_chain_is_caught_by_the_store(reviewed, detector):
    from core.review.report import build_report

    store, sha, _ = reviewed
    doc = build_report(store, sha, detector, probe=False).html
    parser = _ReportParser()
    parser.feed(doc)
    rows = parser.rows
    old = [r["h"] for r in rows]
    lines = [EventLine(r["t"], r["src"], r["ev"], r["who"], r["det"]) for r in rows]
    k = next(i for i, e in enumerate(lines) if e.source == "label" and e.event == "label" and '"real"' in e.details)
    lines[k] = EventLine(lines[k].time, "label", "label", "ana", lines[k].details.replace('"real"', '"fake"'))
    forged = doc.replace(rows[k]["det"].replace('"', "&quot;"), lines[k].details.replace('"', "&quot;"), 1)
    for before, after in zip(old, chain(sha, lines)):
        forged = forged.replace(before, after)
    v = verify_report(forged, store)
    assert not v.ok
    assert not any("does not match its hash" in p for p in v.problems)  # the chain itself is consistent
    assert any(p.startswith(f"Event #{k + 1} differs from the store") for p in v.problems)


def test_later_events_are_reported_not_treated_as_tampering(reviewed, detector):
    from core.review.report import build_report

    store, sha, _ = reviewed
    doc = build_report(store, sha, detector, probe=False).html
    store.enqueue(sha, by="lead", reason="second opinion")
    v = verify_report(doc, store)
    assert v.ok and v.later_events == 1 and "1 later event" in v.summary()


def test_a_swapped_image_fails_verification(reviewed, detector):
    from core.review.report import build_report

    store, sha, _ = reviewed
    doc = build_report(store, sha, detector, probe=False).html
    start = doc.index('id="original"')
    src = doc.index("base64,", start) + len("base64,")
    swapped = doc[:src + 200] + ("A" if doc[src + 200] != "A" else "B") + doc[src + 201:]
    v = verify_report(swapped, store)
    assert not v.ok and any("embedded image" in p for p in v.problems)


def test_a_file_that_is_not_a_report_is_a_message(reviewed, tmp_path):
    from core.review.report import ReportError

    store, _, _ = reviewed
    with pytest.raises(ReportError, match="not an evidence report"):
        verify_report("<html><body>hello</body></html>", store)
    with pytest.raises(ReportError, match="Could not read"):
        verify_report(tmp_path / "missing.html", store)


def test_cli_report_and_verify_report(reviewed, detector, tmp_path, capsys):
    from core.__main__ import main

    store, sha, _ = reviewed
    db = str(store.db_path)
    out = tmp_path / "case" / "report.html"
    assert main(["report", "--db", db, "--sha256", sha, "--out", str(out),
                 "--model", str(detector.checkpoint.path)]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["sha256"] == sha and out.is_file() and made["reproduced"] is True
    assert main(["verify-report", "--db", db, str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    out.write_text(out.read_text(encoding="utf-8").replace('<td class="who">ana</td>',
                                                           '<td class="who">anb</td>', 1), encoding="utf-8")
    assert main(["verify-report", "--db", db, str(out)]) == 1
    assert "NOT verified" in capsys.readouterr().out
    assert main(["report", "--db", db, "--sha256", "ab" * 32, "--out", str(out),
                 "--model", str(detector.checkpoint.path)]) == 2
    assert "No stored item" in capsys.readouterr().err


def test_privacy_mode_reports_a_rendering_and_still_verifies(tmp_path, detector):
    from core.review.report import build_report

    store = ReviewStore(tmp_path / "private.sqlite", privacy_mode=True)
    data = encode(make_photo(640, 480, seed=8), "PNG")
    analysis = analyse(detector, data, name="private.png")
    record_analysis(store, analysis, name="private.png", uploader=None)
    sha = analysis.score.sha256
    report = build_report(store, sha, detector, probe=False)
    assert 'data-kind="rendering"' in report.html and "privacy mode" in report.html
    assert report.reproduced is None  # the thumbnail is not what was scored
    v = verify_report(report.html, store)
    assert v.ok and any("rendering" in n for n in v.notes)
    store.close()


def test_an_analysis_on_screen_is_reused_only_when_it_is_of_these_bytes(reviewed, detector):
    from core.review.report import build_report

    store, sha, data = reviewed
    same = analyse(detector, data, name="suspect.jpg")
    assert build_report(store, sha, detector, probe=False, analysis=same).reproduced is True
    other = analyse(detector, encode(make_photo(200, 200, seed=9), "PNG"))
    report = build_report(store, sha, detector, probe=False, analysis=other)
    assert report.reproduced is True and verify_report(report.html, store).ok


def test_cli_report_defaults_to_the_model_the_dashboard_serves(reviewed, detector, tmp_path, monkeypatch, capsys):
    from core.__main__ import main

    store, sha, _ = reviewed
    monkeypatch.setenv("LADEDA_MODEL", str(detector.checkpoint.path))  # the base; no versions beside the db
    out = tmp_path / "default.html"
    assert main(["report", "--db", str(store.db_path), "--sha256", sha, "--out", str(out), "--no-probe"]) == 0
    assert json.loads(capsys.readouterr().out)["reproduced"] is True
    assert "No stability probe." in out.read_text(encoding="utf-8")

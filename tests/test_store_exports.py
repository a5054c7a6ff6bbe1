"""Export round trip on real databases (SQLite and PostgreSQL): recalibration CSV/JSONL, hard-negative zip,
the SQLite batch for Datasette, and spreadsheet-safe free text."""
from __future__ import annotations

import csv
import json
import sqlite3
import zipfile

import pytest

from core.training.datasets import list_images, read_logit_csv
from core.review.store import MANIFEST_COLUMNS, RECALIBRATION_COLUMNS, ReviewStore, StoreError

from .conftest import encode, make_photo
from .test_store import MODEL, FakeClock

OTHER_MODEL = "b" * 64


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _scored(store, seed, p, tier, label=None, reviewer="alice", model=MODEL, clock=None):
    data = encode(make_photo(40, 32, seed=seed), "JPEG", quality=80)
    sha = store.add_item(data, name=f"photo{seed}.jpg", uploader="up")
    if p is not None:
        store.record_scoring(sha, model_sha256=model, model_label="LaDeDa9", preprocess_fingerprint="fp1",
                             calibration_version="cal-1", logit=round((p - 0.5) * 8, 3), probability=p, tier=tier)
    if label:
        store.label(sha, label, reviewer)
    if clock:
        clock.advance(60)
    return sha, data


@pytest.fixture
def populated(new_db, tmp_path, clock):
    store = ReviewStore(new_db("r"), clock=clock, image_dir=tmp_path / "images")
    s = {
        "real_scored_fake": _scored(store, 1, 0.93, "fake", "real", clock=clock),          # hard negative
        "fake_scored_real": _scored(store, 2, 0.08, "real", "fake", "bob", clock=clock),   # hard negative
        "real_review_high": _scored(store, 3, 0.61, "review", "real", clock=clock),        # hard negative
        "real_review_low": _scored(store, 4, 0.42, "review", "real", clock=clock),         # agrees
        "fake_scored_fake": _scored(store, 5, 0.97, "fake", "fake", "bob", clock=clock),   # agrees
        "unsure": _scored(store, 6, 0.5, "review", "unsure", clock=clock),                 # no ground truth
        "unscored_fake": _scored(store, 7, None, None, "fake", clock=clock),               # no scoring
        "unlabelled": _scored(store, 8, 0.55, "review", None, clock=clock),
    }
    yield store, s
    store.close()


HARD = {"real_scored_fake", "fake_scored_real", "real_review_high"}


def _read_csv(path):
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def test_export_round_trip(populated, tmp_path):
    store, s = populated
    shas = {k: v[0] for k, v in s.items()}
    out = store.export_batch(tmp_path / "out", exported_by="lead")
    # recalibration CSV: exact columns, one row per labelled item, latest scoring
    header, rows = _read_csv(out["csv"])
    assert tuple(header) == RECALIBRATION_COLUMNS
    assert {r["sha256"] for r in rows} == {shas[k] for k in s if k != "unlabelled"}
    by_sha = {r["sha256"]: r for r in rows}
    row = by_sha[shas["real_scored_fake"]]
    assert (row["label"], row["reviewer"], row["model_sha256"], row["calibration_version"],
            row["preprocess_fingerprint"]) == ("real", "alice", MODEL, "cal-1", "fp1")
    assert float(row["probability"]) == 0.93 and row["labelled_at"].endswith("Z")
    assert by_sha[shas["unscored_fake"]]["logit"] == ""
    # what `core calibrate` reads: unsure and unscored rows are skipped, the rest parse
    logits, labels = read_logit_csv(out["csv"])
    assert len(logits) == 5 and sorted(labels) == [0, 0, 0, 1, 1]
    # JSONL carries the same rows
    with open(out["jsonl"]) as fh:
        lines = [json.loads(line) for line in fh]
    assert [x["sha256"] for x in lines] == [r["sha256"] for r in rows]
    assert set(lines[0]) == set(RECALIBRATION_COLUMNS)
    # hard-negative zip in the WildRF layout, usable by `core train --data` once unzipped
    unzipped = tmp_path / "unzipped"
    with zipfile.ZipFile(out["zip"]) as zf:
        assert zf.testzip() is None
        zf.extractall(unzipped)
    images = list_images(unzipped)
    assert {(i.path.stem, i.label) for i in images} == {
        (shas["real_scored_fake"], 0), (shas["real_review_high"], 0), (shas["fake_scored_real"], 1)}
    for img in images:
        assert img.path.read_bytes() == dict(s.values())[img.path.stem]  # original bytes
        assert img.path.suffix == ".jpg"
    header, manifest = _read_csv(unzipped / "manifest.csv")
    assert tuple(header) == MANIFEST_COLUMNS
    assert {m["sha256"] for m in manifest} == {shas[k] for k in HARD}
    assert all(m["content"] == "original" and m["original_name"].startswith("photo") for m in manifest)
    assert out["counts"] == {"items": 7, "real": 3, "fake": 3, "unsure": 1, "unscored": 1, "hard_negatives": 3,
                             "zip_items": 3, "zip_images": 3, "thumbnails": 0, "missing_images": 0}
    # recorded with file hashes, who and filters
    hist = store.export_history()
    assert len(hist) == 1 and hist[0]["id"] == out["export_id"] and hist[0]["exported_by"] == "lead"
    assert hist[0]["files"]["zip"]["sha256"] == out["files"]["zip"]["sha256"]
    assert hist[0]["filters"]["only_new"] is True


def test_only_new_then_repeat_gives_identical_files(populated, tmp_path, clock):
    store, s = populated
    first = store.export_batch(tmp_path / "a")
    assert store.export_preview()["counts"]["items"] == 0
    empty = store.export_batch(tmp_path / "a")  # nothing new: still valid (empty) files
    assert empty["counts"]["items"] == 0 and _read_csv(empty["csv"])[1] == []
    store.label(s["unlabelled"][0], "real", "carol")  # newly labelled
    store.label(s["real_review_low"][0], "fake", "carol")  # relabelled: a new decision to export
    second = store.export_batch(tmp_path / "a")
    assert {r["sha256"] for r in _read_csv(second["csv"])[1]} == {s["unlabelled"][0], s["real_review_low"][0]}
    everything = store.export_batch(tmp_path / "b", only_new=False)
    assert everything["counts"]["items"] == 8
    clock.advance(3600)
    again = store.repeat_export(first["export_id"], tmp_path / "c", exported_by="auditor")
    assert again["repeat_of"] == first["export_id"] and again["export_id"] != first["export_id"]
    for key in ("csv", "jsonl", "zip"):
        assert again["files"][key]["sha256"] == first["files"][key]["sha256"]
    with pytest.raises(StoreError, match="No export"):
        store.repeat_export("exp-nope", tmp_path / "c")


def test_export_filters(populated, tmp_path, clock):
    store, s = populated
    preview = store.export_preview(reviewer="bob")
    assert preview["counts"]["items"] == 2 and [h["sha256"] for h in preview["hard_negatives"]] == \
        [s["fake_scored_real"][0]]
    assert store.export_preview(label="unsure")["counts"]["items"] == 1
    # time range: the first three labels (one minute apart from 12:00)
    window = store.export_preview(since="2026-03-01T12:00:00Z", until="2026-03-01T12:02:30Z")
    assert window["counts"]["items"] == 3
    # model filter uses (and requires) that model's latest scoring
    store.record_scoring(s["real_review_low"][0], model_sha256=OTHER_MODEL, logit=3.0, probability=0.95,
                         tier="fake", auto_queue=False)
    other = store.export_preview(model_sha256=OTHER_MODEL)
    assert other["counts"]["items"] == 1 and other["counts"]["hard_negatives"] == 1
    out = store.export_batch(tmp_path / "m", model_sha256=OTHER_MODEL)
    (row,) = _read_csv(out["csv"])[1]
    assert row["model_sha256"] == OTHER_MODEL and float(row["probability"]) == 0.95
    mine = store.export_preview(model_sha256=MODEL)
    assert mine["counts"]["items"] == 5  # unscored item has no scoring by MODEL
    # all reviewed items into the zip
    full = store.export_batch(tmp_path / "all", only_new=False, include_all_reviewed=True)
    with zipfile.ZipFile(full["zip"]) as zf:
        names = [n for n in zf.namelist() if n != "manifest.csv"]
    assert len(names) == 6 and sum(n.startswith("0_real/") for n in names) == 3
    with pytest.raises(StoreError, match="label"):
        store.export_preview(label="maybe")
    with pytest.raises(StoreError, match="time"):
        store.export_batch(tmp_path / "x", since="yesterday")
    with pytest.raises(StoreError, match="empty"):
        store.export_preview(since="2026-03-02", until="2026-03-01")
    with pytest.raises(StoreError, match="Unknown filter"):
        store.export_preview({"colour": "red"})


def test_privacy_mode_exports_thumbnails_and_says_so(new_db, tmp_path):
    with ReviewStore(new_db("p"), privacy_mode=True, image_dir=tmp_path / "images") as store:
        sha, _ = _scored(store, 1, 0.9, "fake", "real")
        missing, _ = _scored(store, 2, 0.1, "real", "fake")
        store.blobs.thumbnail_path(missing).unlink()  # a lost file must not break the export
        out = store.export_batch(tmp_path / "out")
    with zipfile.ZipFile(out["zip"]) as zf:
        assert sorted(zf.namelist()) == [f"0_real/{sha}.jpg", "manifest.csv"]
        manifest = list(csv.DictReader(zf.read("manifest.csv").decode().splitlines()))
    assert {m["sha256"]: m["content"] for m in manifest} == {sha: "thumbnail", missing: "missing"}
    assert out["counts"]["thumbnails"] == 1 and out["counts"]["missing_images"] == 1


def test_export_refuses_a_file_as_destination(populated, tmp_path):
    store, _ = populated
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        store.export_batch(f)
    assert store.export_history() == []


def test_appended_columns_carry_name_tier_note_and_sign_in(populated, tmp_path):
    store, s = populated
    sha = s["unlabelled"][0]
    store.label(sha, "fake", "dana", note="seen on two sites", authenticated=True)
    out = store.export_batch(tmp_path / "out", reviewer="dana")
    header, (row,) = _read_csv(out["csv"])
    assert tuple(header[:9]) == ("sha256", "logit", "probability", "label", "reviewer", "labelled_at", "model_sha256",
                                 "calibration_version", "preprocess_fingerprint")  # the old contract, unchanged
    assert header[9:14] == ["name", "tier", "note", "authenticated", "agreement_state"]
    # then the scoring's Content Credentials: empty for a scoring whose guardrails verified none
    assert header[14:] == ["provenance", "provenance_signer", "provenance_issuer", "provenance_trusted"]
    assert all(row[c] == "" for c in header[14:])
    assert (row["name"], row["tier"], row["note"], row["authenticated"]) == (
        "photo8.jpg", "review", "seen on two sites", "true")
    (line,) = [json.loads(x) for x in open(out["jsonl"])]
    assert line["authenticated"] is True and line["note"] == "seen on two sites"
    assert _read_csv(store.export_batch(tmp_path / "all", only_new=False)["csv"])[1][0]["authenticated"] == "false"


HOSTILE = {"=HYPERLINK(\"http://evil\",\"x\")": "'=HYPERLINK(\"http://evil\",\"x\")", "+1+2": "'+1+2",
           "-2+3": "'-2+3", "@SUM(A1)": "'@SUM(A1)", "plain note": "plain note"}


def test_free_text_cannot_become_a_spreadsheet_formula(new_db, tmp_path):
    from core.review.export_files import safe_text

    with ReviewStore(new_db(), image_dir=tmp_path / "images") as store:
        for i, note in enumerate(HOSTILE):
            sha = store.add_item(f"x{i}".encode() * 4, name="=cmd|'calc'!A0.jpg" if i == 0 else f"n{i}.jpg")
            store.record_scoring(sha, model_sha256=MODEL, logit=-2.5, probability=0.1, tier="real")
            store.label(sha, "fake", "-alice" if i == 0 else "alice", note=note)
        out = store.export_batch(tmp_path / "out", include_all_reviewed=True)
    rows = _read_csv(out["csv"])[1]
    assert sorted(r["note"] for r in rows) == sorted(HOSTILE.values())
    first = next(r for r in rows if r["reviewer"] != "alice")
    assert first["reviewer"] == "'-alice" and first["name"] == "'=cmd|'calc'!A0.jpg"
    assert all(r["logit"] == "-2.5" for r in rows)  # numbers stay numbers
    with zipfile.ZipFile(out["zip"]) as zf:
        manifest = list(csv.DictReader(zf.read("manifest.csv").decode().splitlines()))
    assert len(manifest) == 5 and {m["original_name"] for m in manifest if m["reviewer"] == "'-alice"} == {
        "'=cmd|'calc'!A0.jpg"}
    (line,) = [json.loads(x) for x in open(out["jsonl"]) if json.loads(x)["reviewer"] == "-alice"]
    assert line["note"].startswith("=HYPERLINK")  # JSONL keeps the text exactly as typed
    assert (safe_text("\tcmd"), safe_text("\rcmd"), safe_text("a=b")) == ("'\tcmd", "'\rcmd", "a=b")


def test_export_as_a_sqlite_file_for_datasette(populated, tmp_path):
    store, s = populated
    target = tmp_path / "batches" / "batch.sqlite"
    out = store.export_batch(tmp_path / "out", sqlite=target)
    assert out["sqlite"] == str(target) and out["files"]["sqlite"]["bytes"] == target.stat().st_size
    conn = sqlite3.connect(target)
    assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} == {
        "items", "scorings", "labels"}
    assert conn.execute("SELECT count(*) FROM labels").fetchone()[0] == out["counts"]["items"] == 7
    assert conn.execute("SELECT count(*) FROM scorings").fetchone()[0] == 6  # one item was never scored
    joined = conn.execute("SELECT i.name, s.probability, l.label FROM labels l JOIN items i USING (sha256) "
                          "JOIN scorings s ON s.id = l.scoring_id WHERE l.sha256 = ?",
                          (s["real_scored_fake"][0],)).fetchone()
    assert joined == ("photo1.jpg", 0.93, "real")
    fks = {(r[2], r[3]) for r in conn.execute("PRAGMA foreign_key_list(labels)")}
    assert fks == {("items", "sha256"), ("scorings", "scoring_id")}
    assert store.export_history()[0]["files"]["sqlite"]["sha256"] == out["files"]["sqlite"]["sha256"]
    with pytest.raises(StoreError, match="not a folder"):
        store.export_batch(tmp_path / "out", sqlite=tmp_path)

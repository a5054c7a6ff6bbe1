"""Review store on real databases (each test on SQLite and PostgreSQL): schema, items, queue, leases, labels,
undo, monitoring, CLI."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3

import numpy as np
import pytest
import sqlalchemy as sa

from core.review.store import (LABELS, PSI_ALERT, PSI_WARN, SCHEMA_VERSION, ReviewStore, StoreError, drift_level,
                        model_verdict, psi, scoring_kwargs)
from core.review.store.schema import MIGRATIONS

from .conftest import encode, make_photo

MODEL = "a" * 64
UTC = dt.timezone.utc


class FakeClock:
    """A settable UTC clock so lease and undo windows are tested without sleeping."""

    def __init__(self, start: dt.datetime = dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)) -> None:
        self.t = start

    def __call__(self) -> dt.datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(new_db, tmp_path, clock):
    s = ReviewStore(new_db(), clock=clock, image_dir=tmp_path / "images")
    yield s
    s.close()


def sql(store: ReviewStore, query: str) -> list[tuple]:
    """Run raw SQL on the store's own connection (what a careless script or a DBA might do)."""
    result = store.conn.execute(sa.text(query))
    return [tuple(r) for r in result.all()] if result.returns_rows else []


def count(store: ReviewStore, table: str) -> int:
    return sql(store, f"SELECT count(*) FROM {table}")[0][0]


def add_scored(store: ReviewStore, n: int, p: float, tier: str | None = None, *, model: str = MODEL,
               clock: FakeClock | None = None) -> str:
    """Store unique bytes ``n`` and score them with probability ``p``."""
    sha = store.add_item(f"image-{n}".encode() * 3, name=f"img{n}.jpg", uploader="up")
    tier = tier or ("real" if p < 0.3 else "fake" if p > 0.7 else "review")
    store.record_scoring(sha, model_sha256=model, model_label="LaDeDa9", preprocess_fingerprint="fp1",
                         calibration_version="cal-1", logit=float(np.log(p / (1 - p))), probability=p, tier=tier,
                         reasons=["test"], guardrails={"ok": True}, timings={"total": 1.0})
    if clock:
        clock.advance(1)
    return sha


# -- schema -----------------------------------------------------------------
def test_new_database_gets_the_schema_once(new_db, tmp_path):
    target = new_db("fresh", migrated=False)
    with ReviewStore(target, image_dir=tmp_path / "images") as s:
        assert s.schema_version == SCHEMA_VERSION == MIGRATIONS[-1].version
        tables = set(sa.inspect(s.engine).get_table_names())
        assert {"items", "scorings", "queue", "queue_events", "label_events", "current_labels", "exports"} <= tables
        columns = {c["name"] for c in sa.inspect(s.engine).get_columns("label_events")}
        assert "authenticated" in columns and "precision" in {c["name"] for c in
                                                              sa.inspect(s.engine).get_columns("scorings")}
    with ReviewStore(target, image_dir=tmp_path / "images") as again:  # re-opening migrates nothing
        assert again.schema_version == SCHEMA_VERSION
        assert count(again, "schema_migrations") == len(MIGRATIONS)


def test_sqlite_file_gets_wal_and_foreign_keys(tmp_path):
    with ReviewStore(tmp_path / "sub" / "r.sqlite") as s:
        assert s.dialect == "sqlite" and s.db_path == tmp_path / "sub" / "r.sqlite"
        assert sql(s, "PRAGMA journal_mode") == [("wal",)]
        assert sql(s, "PRAGMA foreign_keys") == [(1,)]
        assert sql(s, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


def test_a_new_migration_is_applied_once_and_keeps_data(new_db, tmp_path, monkeypatch):
    from core.review.store import schema

    target = new_db()
    with ReviewStore(target, image_dir=tmp_path / "images") as s:
        sha = add_scored(s, 1, 0.5)
        s.label(sha, "fake", "alice")
    ddl = "CREATE TABLE teams (reviewer TEXT PRIMARY KEY, team TEXT NOT NULL)"
    v_next = schema.Migration(SCHEMA_VERSION + 1, "test: reviewer teams", ddl + ";", (ddl,))
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, v_next))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", v_next.version)
    for _ in range(2):
        with ReviewStore(target, image_dir=tmp_path / "images") as s:
            assert s.schema_version == v_next.version and "teams" in sa.inspect(s.engine).get_table_names()
            assert s.item(sha)["current_label"]["label"] == "fake"
            versions = [r[0] for r in sql(s, "SELECT version FROM schema_migrations ORDER BY version")]
            assert versions == list(range(1, v_next.version + 1))


def test_newer_schema_is_refused_without_touching_the_database(new_db, tmp_path):
    target = new_db()
    with ReviewStore(target, image_dir=tmp_path / "images") as s:
        if s.dialect == "sqlite":
            sql(s, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        else:
            sql(s, f"INSERT INTO schema_migrations VALUES ({SCHEMA_VERSION + 1}, 'future', 'x')")
    with pytest.raises(StoreError, match="newer"):
        ReviewStore(target, image_dir=tmp_path / "images")


def test_not_a_database_is_a_clear_error(tmp_path):
    bad = tmp_path / "r.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite"):
        ReviewStore(bad)
    with pytest.raises(StoreError, match="folder"):
        ReviewStore(tmp_path)
    with pytest.raises(StoreError, match="Unsupported database"):
        ReviewStore("mysql://u@localhost/db")


def test_unreachable_postgresql_is_a_clear_error_without_the_password(tmp_path):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StoreError, match="Cannot reach the review database") as err:
        ReviewStore(f"postgresql+psycopg://ana:s3cret@127.0.0.1:{port}/review", image_dir=tmp_path)
    assert "s3cret" not in str(err.value) and "***" in str(err.value)


def test_history_tables_are_append_only(store, clock):
    sha = add_scored(store, 1, 0.5)
    store.label(sha, "real", "alice")
    for statement in ("UPDATE label_events SET label = 'fake'", "DELETE FROM label_events",
                      "DELETE FROM scorings", "UPDATE uploads SET name = 'x'", "DELETE FROM queue_events"):
        with pytest.raises(sa.exc.IntegrityError, match="append-only"):
            sql(store, statement)
    if store.dialect == "postgresql":
        with pytest.raises(sa.exc.IntegrityError, match="append-only"):
            sql(store, "TRUNCATE label_events CASCADE")
    with pytest.raises(sa.exc.IntegrityError):  # items are referenced: cannot vanish
        sql(store, "DELETE FROM items")
    assert store.item(sha)["current_label"]["label"] == "real"


def _v1_file(path) -> None:
    """A review database exactly as the SQLite-only store (schema version 1) left it, with one of everything."""
    from core.review.store.schema import _statements

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
                 "applied_at TEXT NOT NULL)")
    for statement in _statements(MIGRATIONS[0].sqlite):
        conn.execute(statement)
    conn.execute("INSERT INTO schema_migrations VALUES (1, 'v1', '2026-01-01T00:00:00.000000Z')")
    conn.execute("PRAGMA user_version = 1")
    sha, t = "ab" * 32, "2026-01-01T10:00:00.000000Z"
    conn.execute("INSERT INTO settings VALUES ('privacy_mode', '0')")
    conn.execute("INSERT INTO items VALUES (?, 'old.jpg', 3, '.jpg', 'original', ?, 'up', ?)", (sha, t, t))
    conn.execute("INSERT INTO uploads (sha256, name, uploader, uploaded_at) VALUES (?, 'old.jpg', 'up', ?)", (sha, t))
    conn.execute("INSERT INTO scorings (sha256, scored_at, model_sha256, logit, probability, tier, reasons) "
                 "VALUES (?, ?, ?, 0.2, 0.55, 'review', '[\"mid\"]')", (sha, t, MODEL))
    conn.execute("INSERT INTO queue (sha256, state, distance, ready_at, enqueued_at, reason) "
                 "VALUES (?, 'labelled', 0.05, ?, ?, 'review tier')", (sha, t, t))
    conn.execute("INSERT INTO queue_events (sha256, event, at) VALUES (?, 'enqueued', ?)", (sha, t))
    conn.execute("INSERT INTO label_events (sha256, kind, label, reviewer, created_at, note, scoring_id) "
                 "VALUES (?, 'label', 'fake', 'alice', ?, 'old note', 1)", (sha, t))
    conn.execute("INSERT INTO current_labels VALUES (?, 1, 'fake', 'alice', ?)", (sha, t))
    conn.execute("INSERT INTO exports VALUES ('exp-old', ?, 'lead', '{}', '{}', '{}', NULL)", (t,))
    conn.execute("INSERT INTO export_items VALUES ('exp-old', 1, 1, ?)", (sha,))
    conn.execute("COMMIT")
    conn.close()


def test_a_version_1_sqlite_file_migrates_in_place_with_nothing_lost(tmp_path):
    path = tmp_path / "old.sqlite"
    _v1_file(path)
    before = {t: sqlite3.connect(path).execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
              for t in ("items", "uploads", "scorings", "queue", "queue_events", "label_events", "current_labels",
                        "exports", "export_items", "settings")}
    with ReviewStore(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        item = s.item("ab" * 32)
        assert item["current_label"]["label"] == "fake" and item["current_label"]["authenticated"] is False
        assert item["latest_scoring"]["reasons"] == ["mid"] and item["latest_scoring"]["precision"] is None
        assert item["label_events"][0]["note"] == "old note" and s.export_history()[0]["id"] == "exp-old"
        for table, rows in before.items():  # every old row is still there, unchanged, new columns appended
            now = sql(s, f"SELECT * FROM {table} ORDER BY 1")
            assert [r[:len(rows[0])] if rows else r for r in now] == rows, table
        s.label("ab" * 32, "real", "bob", authenticated=True)  # and the file works on
        assert s.item("ab" * 32)["label_version"] == 2
    assert [r[0] for r in sqlite3.connect(path).execute("SELECT version FROM schema_migrations")] == list(
        range(1, SCHEMA_VERSION + 1))


# -- items and scorings ---------------------------------------------------------
def test_same_bytes_twice_is_one_item_with_two_scorings(store, clock, tmp_path):
    data = encode(make_photo(64, 48), "PNG")
    a = store.add_item(data, name="/home/x/first.png", uploader="ann")
    clock.advance(5)
    b = store.add_item(data, name="second.png", uploader="ben")
    assert a == b
    for p in (0.45, 0.55):
        store.record_scoring(a, model_sha256=MODEL, logit=0.0, probability=p, tier="review")
    item = store.item(a)
    assert item["name"] == "first.png" and item["uploader"] == "ann" and item["size"] == len(data)
    assert item["ext"] == ".png" and item["storage"] == "original"
    assert [u["uploader"] for u in item["uploads"]] == ["ann", "ben"]
    assert [s["probability"] for s in item["scorings"]] == [0.45, 0.55]
    assert item["latest_scoring"]["probability"] == 0.55
    assert [e["event"] for e in item["queue_events"]] == ["enqueued"]  # queued once
    assert store.image_bytes(a) == data
    assert store.has_item(a) and not store.has_item("0" * 64)
    assert count(store, "items") == 1
    files = list((tmp_path / "images" / "originals").rglob("*"))
    assert [f.name for f in files if f.is_file()] == [a]


def test_bad_input_is_refused_clearly(store):
    with pytest.raises(StoreError, match="empty"):
        store.add_item(b"", name="x.jpg", uploader=None)
    sha = store.add_item(b"abc", name="x.jpg", uploader=None)
    bad = dict(model_sha256=MODEL, logit=0.0, probability=0.5, tier="review")
    with pytest.raises(StoreError, match="tier"):
        store.record_scoring(sha, **{**bad, "tier": "maybe"})
    with pytest.raises(StoreError, match="probability"):
        store.record_scoring(sha, **{**bad, "probability": 1.5})
    with pytest.raises(StoreError, match="finite"):
        store.record_scoring(sha, **{**bad, "logit": float("nan")})
    with pytest.raises(StoreError, match="No stored item"):
        store.record_scoring("0" * 64, **bad)
    with pytest.raises(StoreError, match="SHA-256"):
        store.enqueue("not-a-hash")
    with pytest.raises(StoreError, match="label"):
        store.label(sha, "maybe", "alice")
    with pytest.raises(StoreError, match="reviewer"):
        store.claim_next("  ")
    assert count(store, "scorings") == 0


def test_guardrails_with_numpy_and_nan_are_stored_as_plain_json(store):
    sha = store.add_item(b"abc", name="x.jpg", uploader=None)
    store.record_scoring(sha, model_sha256=MODEL, logit=np.float32(0.25), probability=np.float64(0.56),
                         tier="review", reasons=("mid-confidence",),
                         guardrails={"blur": np.float32(0.5), "nan": float("nan"), "arr": np.arange(2)},
                         timings={"total": 3})
    s = store.latest_scoring(sha)
    assert s["guardrails"] == {"arr": [0, 1], "blur": 0.5, "nan": None}
    assert s["reasons"] == ["mid-confidence"] and s["logit"] == 0.25


def test_scoring_kwargs_maps_score_result_json(store):
    sha = store.add_item(b"abc", name="x.jpg", uploader=None)
    result_json = {"sha256": sha, "logit": -0.1, "probability": 0.47, "model_sha256": MODEL, "model": "LaDeDa9",
                   "preprocess_fingerprint": "fp", "calibration_version": "v2", "timings_ms": {"total": 9.5}}
    store.record_scoring(sha, **scoring_kwargs(result_json), tier="review", reasons=["mid"], guardrails={})
    s = store.latest_scoring(sha)
    assert (s["model_label"], s["calibration_version"], s["timings"]) == ("LaDeDa9", "v2", {"total": 9.5})
    assert store.queue_stats()["queued"] == 1


def test_only_review_tier_is_queued_automatically_and_labels_stand(store, clock):
    real = add_scored(store, 1, 0.1)
    fake = add_scored(store, 2, 0.9)
    review = add_scored(store, 3, 0.5)
    no_auto = store.add_item(b"quiet", name="q.jpg", uploader=None)
    store.record_scoring(no_auto, model_sha256=MODEL, logit=0.0, probability=0.5, tier="review", auto_queue=False)
    assert store.queue_stats() == {"queued": 1, "leased": 0, "labelled": 0}
    store.enqueue(fake, by="lead", reason="second look")  # any item by hand
    store.enqueue(fake, by="lead")  # idempotent
    assert store.queue_stats()["queued"] == 2
    store.label(review, "fake", "alice")
    store.record_scoring(review, model_sha256="b" * 64, logit=0.0, probability=0.5, tier="review")
    assert store.item(review)["queue_state"] == "labelled"  # a human label is not re-queued automatically
    assert [(h["sha256"], h["name"], h["label"]) for h in store.label_history(reviewer="alice")] == [
        (review, "img3.jpg", "fake")]  # the file name comes with each decision
    seen = store.labels_with_scorings()  # the label keeps the scoring it was given on, not the re-score
    assert [(r["sha256"], r["label"], r["model_sha256"], r["guardrails"]) for r in seen] == [
        (review, "fake", MODEL, {"ok": True})]
    store.enqueue(review, by="lead", reason="recheck")  # but can be by hand
    assert store.item(review)["queue"]["state"] == "queued"
    assert store.item(real)["queue"] is None and store.item(real)["queue_state"] is None


def test_privacy_mode_keeps_only_a_thumbnail_and_is_sticky(new_db, tmp_path, monkeypatch):
    data = encode(make_photo(640, 480), "PNG")
    path = new_db("p")
    monkeypatch.setenv("LADEDA_IMAGE_DIR", str(tmp_path / "images"))  # the configurable image folder
    with ReviewStore(path, privacy_mode=True) as s:
        sha = s.add_item(data, name="face.png", uploader="u")
        assert s.item(sha)["storage"] == "thumbnail"
        thumb = s.image_bytes(sha)
        assert thumb[:3] == b"\xff\xd8\xff" and len(thumb) < len(data)
    assert not (tmp_path / "images" / "originals").exists()
    with ReviewStore(path) as again:  # forgetting the flag does not start keeping originals
        assert again.privacy_mode
        sha2 = again.add_item(encode(make_photo(64, 64, seed=3), "PNG"), name="b.png", uploader=None)
        assert again.item(sha2)["storage"] == "thumbnail"
        not_image = again.add_item(b"\x00garbage", name="x.bin", uploader=None)
        assert again.item(not_image)["storage"] == "none" and again.image_bytes(not_image) is None
    assert not (tmp_path / "images" / "originals").exists()


def test_recent_items_and_search(store, clock):
    shas = [add_scored(store, i, 0.2 + 0.1 * i, clock=clock) for i in range(5)]
    recent = store.recent_items(limit=3)
    assert [r["sha256"] for r in recent] == shas[::-1][:3]
    assert recent[0]["probability"] == pytest.approx(0.6)
    assert [r["sha256"] for r in store.recent_items(search=shas[2][:10])] == [shas[2]]
    assert [r["name"] for r in store.recent_items(search="img3")] == ["img3.jpg"]
    assert store.recent_items(search="100%_") == []
    store.label(shas[0], "real", "alice")
    assert [r["sha256"] for r in store.recent_items(labelled=True)] == [shas[0]]
    assert len(store.recent_items(tier="review")) == 4


# -- queue ------------------------------------------------------------------------
def test_claim_order_is_uncertainty_first_then_oldest(store, clock):
    far = add_scored(store, 1, 0.62, clock=clock)        # distance 0.12
    near_old = add_scored(store, 2, 0.53, clock=clock)   # 0.03
    near_new = add_scored(store, 3, 0.47, clock=clock)   # 0.03, later
    manual = store.add_item(b"unscored", name="u.jpg", uploader=None)
    store.enqueue(manual, by="lead")                     # unscored counts as 0.5
    assert [r["sha256"] for r in store.queue_items()] == [near_old, near_new, far, manual]
    order = [store.claim_next(f"r{i}")["sha256"] for i in range(4)]
    assert [r["state"] for r in store.queue_items(2)] == ["leased", "leased"]
    assert [r["lease_reviewer"] for r in store.leases("r2")] == ["r2"]
    assert order == [near_old, near_new, far, manual]
    assert store.claim_next("r9") is None
    assert store.queue_stats() == {"queued": 0, "leased": 4, "labelled": 0}


def test_claimed_item_carries_scoring_and_lease(store, clock):
    sha = add_scored(store, 1, 0.55)
    item = store.claim_next("alice", lease_seconds=120)
    assert item["sha256"] == sha and item["state"] == "leased" and item["lease_reviewer"] == "alice"
    assert item["lease_expires_at"] == "2026-03-01T12:02:00.000000Z"
    assert item["scoring"]["probability"] == 0.55 and item["scoring"]["reasons"] == ["test"]
    assert item["scoring"]["model_sha256"] == MODEL and item["current_label"] is None
    json.dumps(item)


def test_leases_expire_and_the_item_returns(store, clock):
    sha = add_scored(store, 1, 0.5)
    assert store.claim_next("alice", lease_seconds=60)["sha256"] == sha
    clock.advance(30)
    assert store.claim_next("bob") is None  # still held
    with pytest.raises(StoreError, match="leased to alice"):
        store.label(sha, "fake", "bob")
    clock.advance(31)
    assert store.queue_stats() == {"queued": 1, "leased": 0, "labelled": 0}  # expired counts as queued
    again = store.claim_next("bob")
    assert again["sha256"] == sha and again["lease_reviewer"] == "bob"
    with pytest.raises(StoreError, match="leased to bob"):
        store.label(sha, "real", "alice")
    with pytest.raises(StoreError, match="leased to bob"):
        store.release(sha, "alice")
    events = [(e["event"], e["actor"]) for e in store.item(sha)["queue_events"]]
    assert events == [("enqueued", None), ("claimed", "alice"), ("expired", "alice"), ("claimed", "bob")]


def test_renew_release_and_skip(store, clock):
    a = add_scored(store, 1, 0.51, clock=clock)
    b = add_scored(store, 2, 0.55, clock=clock)
    c = add_scored(store, 3, 0.6, clock=clock)
    item = store.claim_next("alice", lease_seconds=60)
    assert item["sha256"] == a
    clock.advance(50)
    new_expiry = store.renew_lease(a, "alice", lease_seconds=60)
    assert new_expiry == "2026-03-01T12:01:53.000000Z"
    with pytest.raises(StoreError, match="not leased to bob"):
        store.renew_lease(b, "bob")
    store.release(a, "alice")  # keeps its place: first again
    assert store.claim_next("alice")["sha256"] == a
    store.skip(a, "alice")  # to the back
    assert [store.claim_next("bob")["sha256"] for _ in range(3)] == [b, c, a]
    store.skip(b, "bob")
    store.skip(c, "bob")
    assert store.claim_next("carol")["sha256"] == b  # skipped items in skip order
    store.label(c, "real", "bob")  # a queued item nobody holds can be labelled
    with pytest.raises(StoreError, match="not in the review queue"):
        store.skip(c, "bob")


def test_label_permissions_and_label_now(store, clock):
    leased = add_scored(store, 1, 0.5)
    outside = add_scored(store, 2, 0.95)  # never queued
    store.claim_next("alice")
    with pytest.raises(StoreError, match="leased to alice"):
        store.label(leased, "fake", "bob")
    ev = store.label(leased, "fake", "alice", note=" looks generated ", seconds_spent=12.5)
    assert (ev["label"], ev["reviewer"], ev["note"], ev["seconds_spent"]) == ("fake", "alice", "looks generated", 12.5)
    assert ev["created_at"].endswith("Z") and ev["scoring_id"] is not None
    store.label(outside, "real", "bob")  # "label now" from the inspect page
    item = store.item(outside)
    assert item["queue"]["state"] == "labelled" and item["current_label"]["label"] == "real"
    assert all(e["event"] != "enqueued" for e in item["queue_events"])
    assert store.queue_stats() == {"queued": 0, "leased": 0, "labelled": 2}


# -- undo -------------------------------------------------------------------------
def test_undo_is_a_new_event_and_returns_the_item_to_the_reviewer(store, clock):
    sha = add_scored(store, 1, 0.5)
    store.claim_next("alice")
    store.label(sha, "fake", "alice")
    clock.advance(30)
    out = store.undo_last("alice")
    assert out["undone"]["label"] == "fake" and out["current_label"] is None
    assert out["queue_state"] == "leased"
    item = store.item(sha)
    assert [(e["kind"], e["label"]) for e in item["label_events"]] == [("label", "fake"), ("undo", None)]
    assert item["label_events"][1]["undoes"] == item["label_events"][0]["id"]
    assert item["queue"]["lease_reviewer"] == "alice"
    with pytest.raises(StoreError, match="leased to alice"):
        store.label(sha, "real", "bob")
    store.label(sha, "real", "alice")
    assert store.item(sha)["current_label"]["label"] == "real"
    clock.advance(601)
    with pytest.raises(StoreError, match="Nothing to undo"):
        store.undo_last("alice")
    assert store.undo_last("alice", window_seconds=3600)["undone"]["label"] == "real"


def test_undo_walks_back_and_restores_earlier_labels(store, clock):
    x = add_scored(store, 1, 0.9)
    y = add_scored(store, 2, 0.1)
    store.label(x, "real", "alice")
    store.label(x, "fake", "bob")  # second opinion supersedes, keeps history
    store.label(y, "fake", "bob")
    assert store.undo_last("bob")["undone"]["sha256"] == y
    out = store.undo_last("bob")
    assert out["undone"]["sha256"] == x
    assert out["current_label"]["label"] == "real" and out["current_label"]["reviewer"] == "alice"
    assert out["queue_state"] == "labelled"
    with pytest.raises(StoreError, match="Nothing to undo"):
        store.undo_last("bob")
    store.label(x, "unsure", "carol")
    with pytest.raises(StoreError, match="labelled again by carol"):
        store.undo_last("alice")
    kinds = sql(store, "SELECT kind, count(*) FROM label_events GROUP BY kind")
    assert dict(kinds) == {"label": 4, "undo": 2}


# -- monitoring ---------------------------------------------------------------------
def test_psi_thresholds_and_drift(store, clock):
    rng = np.random.default_rng(0)
    same = psi(rng.beta(2, 5, 5000), rng.beta(2, 5, 5000))
    shifted = psi(rng.beta(2, 5, 5000), rng.beta(5, 2, 5000))
    assert same < PSI_WARN and shifted > PSI_ALERT
    assert (drift_level(0.05), drift_level(0.15), drift_level(0.3)) == ("ok", "warn", "alert")

    def log(day: int, probs) -> None:
        clock.t = dt.datetime(2026, 3, day, 12, tzinfo=UTC)
        for i, p in enumerate(probs):
            sha = store.add_item(f"{day}-{i}".encode(), name="x.jpg", uploader=None)
            store.record_scoring(sha, model_sha256=MODEL, logit=0.0, probability=float(p),
                                 tier="fake" if p > 0.7 else "real" if p < 0.3 else "review", auto_queue=False)

    with store.batch():
        log(1, rng.beta(2, 5, 300))
        log(10, rng.beta(2, 5, 300))
        log(11, rng.beta(5, 2, 300))
    ref, recent = ("2026-03-01", "2026-03-02"), ("2026-03-10", "2026-03-11")
    assert store.drift(ref, recent)["alert"] == "ok"
    d = store.drift(ref, ("2026-03-11", "2026-03-12"))
    assert d["alert"] == "alert" and d["psi"] > PSI_ALERT and d["ks"] > 0.3 and d["ks_pvalue"] < 1e-6
    assert d["n_reference"] == 300 == d["n_recent"]
    few = store.drift(ref, ("2026-03-20", "2026-03-21"))
    assert few["insufficient_data"] and few["psi"] is None and few["alert"] == "ok"
    assert store.drift(ref, recent, model_sha256="c" * 64)["n_reference"] == 0
    clock.t = dt.datetime(2026, 3, 11, 18, tzinfo=UTC)
    hist = store.daily_histograms(days=2, bins=5)
    assert [d["day"] for d in hist["days"]] == ["2026-03-10", "2026-03-11"]
    assert sum(hist["days"][1]["counts"]) == 300 and len(hist["edges"]) == 6
    mix = store.tier_mix(days=2)
    assert mix[1]["total"] == 300 and mix[1]["fake"] > mix[0]["fake"]
    share = store.flagged_share(days=2)
    assert share["total"] == 600 and 0 < share["share"] < 1
    json.dumps([hist, mix, share, d])


def test_queue_flow_and_overturn_rate(store, clock):
    a = add_scored(store, 1, 0.6)   # model: fake
    b = add_scored(store, 2, 0.4)   # model: real
    c = add_scored(store, 3, 0.55)  # model: fake
    for sha, label, who in ((a, "real", "alice"), (b, "real", "alice"), (c, "fake", "bob")):
        store.label(sha, label, who)
    rate = store.overturn_rate()
    assert (rate["labelled"], rate["overturned"]) == (3, 1)
    assert rate["by_reviewer"]["alice"] == {"labelled": 2, "overturned": 1, "rate": 0.5}
    flow = store.queue_flow(days=1)
    assert flow == [{"day": "2026-03-01", "inflow": 3, "outflow": 3, "expired": 0, "skipped": 0}]
    assert model_verdict("review", 0.5) == "fake" and model_verdict(None, None) is None


# -- CLI --------------------------------------------------------------------------
def _cli(argv: list[str], capsys) -> object:
    """Run our commands through a parser built only from our modules (no torch import)."""
    from core.cli import export, queue

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    queue.register(sub)
    export.register(sub)
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_contract(new_db, tmp_path, capsys, monkeypatch):
    db = str(new_db("cli"))
    monkeypatch.setenv("LADEDA_IMAGE_DIR", str(tmp_path / "images"))
    with ReviewStore(db) as s:
        review = add_scored(s, 1, 0.52)
        hand = add_scored(s, 2, 0.97)
    assert _cli(["queue", "stats", "--db", db], capsys) == {"queued": 1, "leased": 0, "labelled": 0}
    assert _cli(["queue", "add", "--db", db, "--sha256", hand], capsys)["state"] == "queued"
    claimed = _cli(["queue", "claim", "--db", db, "--reviewer", "alice"], capsys)
    assert claimed["sha256"] == review
    ev = _cli(["queue", "label", "--db", db, "--sha256", review, "--label", "real", "--reviewer", "alice",
               "--note", "camera noise"], capsys)
    assert ev["label"] == "real" and ev["note"] == "camera noise"
    assert _cli(["queue", "claim", "--db", db, "--reviewer", "bob"], capsys)["sha256"] == hand
    assert _cli(["queue", "claim", "--db", db, "--reviewer", "bob"], capsys) is None
    assert _cli(["queue", "stats", "--db", db], capsys) == {"queued": 0, "leased": 1, "labelled": 1}
    out = _cli(["export", "--db", db, "--out", str(tmp_path / "exp"), "--by", "lead"], capsys)
    assert out["counts"]["items"] == 1 and out["counts"]["hard_negatives"] == 1
    for key in ("csv", "jsonl", "zip"):
        assert (tmp_path / "exp").joinpath(out[key].rsplit("/", 1)[1]).is_file()
    assert _cli(["export", "--db", db, "--history"], capsys)[0]["id"] == out["export_id"]


def test_cli_is_discovered_by_core_main_and_errors_exit_2(tmp_path, capsys):
    from core.__main__ import main

    db = str(tmp_path / "m.sqlite")
    assert main(["queue", "stats", "--db", db, "--create"]) == 0
    assert json.loads(capsys.readouterr().out) == {"queued": 0, "leased": 0, "labelled": 0}
    assert main(["queue", "add", "--db", db, "--sha256", "f" * 64]) == 2
    assert "No stored item" in capsys.readouterr().err
    assert set(LABELS) == {"real", "fake", "unsure"}


# -- both databases: what the SQLAlchemy store adds ------------------------------------
def test_claim_says_why_the_item_was_picked(store, clock):
    near = add_scored(store, 1, 0.51, clock=clock)
    far = add_scored(store, 2, 0.35, clock=clock)
    hand = store.add_item(b"by hand", name="h.jpg")
    store.enqueue(hand, by="lead", reason="customer complaint")
    first = store.claim_next("alice", lease_seconds=60)
    assert (first["sha256"], first["why"]) == (near, "the model is least sure of this one (p = 0.51)")
    assert first["label_version"] == 0
    clock.advance(61)  # alice walks away
    again = store.claim_next("bob")
    assert again["sha256"] == near and again["why"] == "lease expired (alice did not finish); the model is least sure of this one (p = 0.51)"
    assert store.claim_next("bob")["why"] == "the model is least sure of this one (p = 0.35)"
    store.skip(far, "bob")
    assert store.claim_next("carol")["why"] == "queued by lead: customer complaint"
    assert store.claim_next("dan")["why"] == "the model is least sure of this one (p = 0.35); skipped 1× before"


def test_priority_is_the_distance_to_the_boundary(store):
    from core.review.store import priority

    assert (priority(0.5), priority(0.2), priority(0.9), priority(None)) == (0.0, 0.3, pytest.approx(0.4), 0.5)
    sha = add_scored(store, 1, 0.62)
    assert store.item(sha)["queue"]["distance"] == pytest.approx(priority(0.62))


def test_a_stale_label_version_cannot_overwrite_a_newer_decision(new_db, tmp_path, clock):
    target = new_db()
    with ReviewStore(target, clock=clock, image_dir=tmp_path / "images") as a, \
            ReviewStore(target, clock=clock, image_dir=tmp_path / "images") as b:  # two reviewers, two connections
        sha = add_scored(a, 1, 0.95)  # never queued: both open it from the Inspect page
        seen_by_a, seen_by_b = a.item(sha)["label_version"], b.item(sha)["label_version"]
        assert seen_by_a == seen_by_b == 0
        assert b.label(sha, "real", "bob", expected_version=seen_by_b)["label_version"] == 1
        with pytest.raises(StoreError, match="changed by bob .* since you opened it"):
            a.label(sha, "fake", "alice", expected_version=seen_by_a)
        assert a.item(sha)["current_label"]["label"] == "real"  # bob's decision stands
        ev = a.label(sha, "fake", "alice", expected_version=a.item(sha)["label_version"])  # after a reload
        assert ev["label_version"] == 2 and b.item(sha)["current_label"]["reviewer"] == "alice"
        assert a.undo_last("alice")["label_version"] == 3
        with pytest.raises(StoreError, match="since you opened it"):
            b.label(sha, "unsure", "bob", expected_version=2)


def test_sign_in_and_precision_are_recorded(store):
    sha = store.add_item(b"abc", name="x.jpg")
    store.record_scoring(sha, model_sha256=MODEL, logit=0.1, probability=0.52, tier="review", precision="bf16")
    store.record_scoring(sha, **scoring_kwargs({"logit": 0.1, "probability": 0.52, "model_sha256": MODEL}),
                         tier="review")
    assert [s["precision"] for s in store.item(sha)["scorings"]] == ["bf16", None]
    store.label(sha, "real", "ann@example.org", authenticated=True)
    store.label(sha, "fake", "typed name")
    events = store.item(sha)["label_events"]
    assert [e["authenticated"] for e in events] == [True, False]
    assert store.item(sha)["current_label"]["authenticated"] is False


def test_leases_run_on_the_database_clock_on_postgresql(new_db, tmp_path, monkeypatch):
    """Without an injected clock PostgreSQL times leases by the server's clock, SQLite by this machine's."""
    from core.review.store import db as db_module, from_iso

    skewed = dt.datetime(1999, 1, 1, tzinfo=UTC)
    monkeypatch.setattr(db_module, "utc_now", lambda: skewed)  # this app server's clock is badly wrong
    with ReviewStore(new_db(), image_dir=tmp_path / "images") as s:
        add_scored(s, 1, 0.5)
        expires = from_iso(s.claim_next("alice", lease_seconds=60)["lease_expires_at"])
        if s.dialect == "postgresql":
            server_now = s.conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
            assert abs((expires - server_now).total_seconds() - 60) < 30
        else:
            assert expires == skewed + dt.timedelta(seconds=60)


def test_database_failures_reach_users_as_store_errors(new_db, tmp_path, monkeypatch, request):
    target = new_db()
    with ReviewStore(target, image_dir=tmp_path / "images") as s:
        sha = add_scored(s, 1, 0.5)
        if s.dialect == "postgresql":  # the server drops our connection and refuses new ones (a failover)
            server = request.getfixturevalue("pg_server")
            dbname = str(target).rsplit("/", 1)[1]
            server.admin(f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS false")
            server.admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}'")
            try:
                with pytest.raises(StoreError, match="unavailable|refused|Cannot reach"):
                    s.label(sha, "real", "alice")
            finally:
                server.admin(f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS true")
        else:  # another process holds the write lock longer than we wait
            from core.review.store import db as db_module

            monkeypatch.setattr(db_module, "BUSY_TIMEOUT_S", 0.2)
            locker = sqlite3.connect(target, isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")
            with ReviewStore(target, image_dir=tmp_path / "images") as impatient:
                with pytest.raises(StoreError, match="busy or unavailable"):
                    impatient.label(sha, "real", "alice")
            locker.execute("ROLLBACK")
            locker.close()
    with ReviewStore(target, image_dir=tmp_path / "images") as s:  # nothing half-written
        assert s.item(sha)["label_events"] == [] and s.queue_stats()["queued"] == 1


def test_open_store_takes_a_path_or_a_url_and_never_creates_by_mistake(new_db, tmp_path, monkeypatch, backend):
    from core.cli._db import open_db
    from core.review.store import open_store

    monkeypatch.setenv("LADEDA_IMAGE_DIR", str(tmp_path / "images"))
    missing = tmp_path / "nowhere" / "typo.sqlite"
    with pytest.raises(StoreError, match="No review database .* --create"):
        open_db(argparse.Namespace(db=str(missing)))
    assert not missing.parent.exists()
    open_db(argparse.Namespace(db=str(missing), create=True)).close()
    assert missing.is_file()
    target = str(new_db())
    with open_store(target, create=True) as s:  # (create has no effect on a URL)
        sha = add_scored(s, 1, 0.5)
    monkeypatch.setenv("LADEDA_DATABASE_URL" if backend == "postgresql" else "LADEDA_DATA_DIR",
                       target if backend == "postgresql" else str(tmp_path))
    with open_db(argparse.Namespace()) as s:  # no --db: $LADEDA_DATABASE_URL, else the data directory's file
        assert s.item(sha)["name"] == "img1.jpg"
    if backend == "postgresql":
        with pytest.raises(StoreError, match="Cannot reach"):  # a URL is never created
            open_store(target.rsplit("/", 1)[0] + "/no_such_db", create=True)


def test_postgresql_store_survives_a_dropped_connection(pg_server, tmp_path):
    """The server drops the store's connection (restart, idle timeout, a DBA's pg_terminate_backend):
    the next transaction opens on a new connection and nothing already labelled is lost."""
    url = pg_server.fresh_database()
    try:
        store = ReviewStore(url, image_dir=tmp_path / "images")
        shas = [store.add_item(f"image {i}".encode(), name=f"i{i}.png") for i in range(3)]
        for sha in shas:
            store.enqueue(sha, by="t", reason="test")
        first = store.claim_next("ana")
        store.label(first["sha256"], "fake", "ana")
        dbname = url.rsplit("/", 1)[1]

        def drop() -> None:
            pg_server.admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}'")

        drop()
        second = store.claim_next("ana")  # a write transaction: BEGIN finds the connection gone, reconnects
        assert second is not None and second["sha256"] != first["sha256"]
        store.label(second["sha256"], "real", "ana")
        drop()
        assert store.item(first["sha256"])["current_label"]["label"] == "fake"  # a read after the drop
        drop()
        try:  # a single autocommit statement that hits the dropped connection fails clearly, once
            store.queue_stats()
        except StoreError:
            pass
        assert store.queue_stats().get("labelled") == 2
        store.close()
    finally:
        pg_server.drop(url)

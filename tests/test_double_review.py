"""Blind double review on both databases: a second, independent reviewer who does not see the first label,
adjudication of disagreements by a third, undo across stages, and several processes at once."""
from __future__ import annotations

import multiprocessing as mp
import random
import time

import pytest

from core.review.agreement import cohen_kappa, first_two_labels, labels_hidden_from
from core.review.store import ReviewStore, StoreError

MODEL = "a" * 64


def _item(store: ReviewStore, i: int, tier: str = "review", p: float = 0.5) -> str:
    sha = store.add_item(f"double-{i}".encode(), name=f"{i}.jpg")
    store.record_scoring(sha, model_sha256=MODEL, logit=0.0, probability=p, tier=tier)
    return sha


@pytest.fixture
def open_store(new_db, tmp_path):
    made = []

    def make(share):
        target = new_db()
        s = ReviewStore(target, image_dir=tmp_path / "images", second_review_share=share)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def test_second_reviewer_is_independent_and_blind(open_store):
    store = open_store(1.0)
    sha = _item(store, 0)
    assert store.claim_next("ana")["sha256"] == sha
    store.label(sha, "fake", "ana")
    item = store.item(sha)
    assert item["queue_state"] == "queued" and item["review_stage"] == "second"
    assert item["agreement_state"] == "pending_second"
    assert store.claim_next("ana") is None  # the first reviewer cannot take the second review
    assert labels_hidden_from(store.item(sha), "bo") and labels_hidden_from(store.item(sha), None)
    assert not labels_hidden_from(store.item(sha), "ana")  # their own label
    claimed = store.claim_next("bo")
    assert claimed["sha256"] == sha and claimed["stage"] == "second" and claimed["current_label"] is None
    assert "second review" in claimed["reason"]
    store.label(sha, "fake", "bo")
    item = store.item(sha)
    assert item["queue_state"] == "labelled" and item["agreement_state"] == "agreed"
    assert [(e["reviewer"], e["stage"]) for e in item["label_events"]] == [("ana", "first"), ("bo", "second")]
    assert not labels_hidden_from(item, "cy")  # agreed: nothing left to keep blind


def test_disagreement_goes_to_adjudication_and_the_third_label_is_final(open_store, tmp_path):
    store = open_store(1.0)
    sha = _item(store, 1)
    store.claim_next("ana")
    store.label(sha, "fake", "ana")
    store.claim_next("bo")
    store.label(sha, "real", "bo")
    assert store.item(sha)["agreement_state"] == "pending_adjudication"
    assert store.claim_next("ana") is None and store.claim_next("bo") is None
    with pytest.raises(StoreError, match="independent adjudication review"):
        store.label(sha, "real", "bo")  # "label now" by someone who already decided is refused too
    lead = store.claim_next("lead")
    assert lead["stage"] == "adjudication" and "ana said fake, bo said real" in lead["reason"]
    assert [(e["reviewer"], e["label"]) for e in lead["earlier_labels"]] == [("ana", "fake"), ("bo", "real")]
    store.label(sha, "real", "lead")
    item = store.item(sha)
    assert item["agreement_state"] == "adjudicated" and item["current_label"]["label"] == "real"
    assert item["current_label"]["reviewer"] == "lead"
    listed = {r["sha256"]: r for r in store.labelled_items(limit=None)}
    assert listed[sha]["label"] == "real" and listed[sha]["agreement_state"] == "adjudicated"
    out = store.export_batch(tmp_path / "exports", exported_by="lead")
    import csv

    rows = list(csv.DictReader(open(out["files"]["csv"]["path"] if "path" in out["files"]["csv"]
                                    else out["files"]["csv"], newline="")))
    row = next(r for r in rows if r["sha256"] == sha)
    assert row["label"] == "real" and row["reviewer"] == "lead" and row["agreement_state"] == "adjudicated"


def test_an_overturned_clear_verdict_always_gets_a_second_review(open_store):
    store = open_store(0.0)
    plain, overturned = _item(store, 2, tier="review"), _item(store, 3, tier="fake", p=0.95)
    store.label(plain, "real", "ana")
    store.label(overturned, "real", "ana")
    assert store.item(plain)["agreement_state"] == "single"
    item = store.item(overturned)
    assert item["agreement_state"] == "pending_second" and "overturned the model's clear 'fake'" in item["queue"]["reason"]


def test_double_review_off_keeps_single_labels(open_store):
    store = open_store(None)
    sha = _item(store, 4, tier="fake", p=0.95)
    store.label(sha, "real", "ana")
    assert store.item(sha)["agreement_state"] == "single" and store.item(sha)["queue_state"] == "labelled"


def test_undo_returns_the_item_to_the_stage_it_was_labelled_at(open_store):
    store = open_store(1.0)
    sha = _item(store, 5)
    store.claim_next("ana")
    store.label(sha, "fake", "ana")
    assert store.item(sha)["review_stage"] == "second"
    out = store.undo_last("ana")
    item = store.item(sha)
    assert out["queue_state"] == "leased" and item["review_stage"] == "first" and item["queue"]["lease_reviewer"] == "ana"
    store.label(sha, "real", "ana")  # she may decide again
    claimed = store.claim_next("bo")
    assert claimed["sha256"] == sha and claimed["stage"] == "second"
    with pytest.raises(StoreError, match="bo is reviewing"):
        store.undo_last("ana")  # the second review is under way
    assert store.item(sha)["queue"]["lease_reviewer"] == "bo"


def _reviewer(target: str, image_dir: str, name: str, seed: int, deadline: float) -> None:
    rng = random.Random(seed)
    with ReviewStore(target, image_dir=image_dir, second_review_share=1.0) as store:
        while time.time() < deadline:
            item = store.claim_next(name)
            if item is None:  # nothing this reviewer may take now: done once nobody has anything left
                stats = store.queue_stats()
                if stats["queued"] == 0 and stats["leased"] == 0:
                    return
                time.sleep(0.05)
                continue
            store.label(item["sha256"], rng.choice(["real", "fake"]), name)


@pytest.mark.slow
def test_four_reviewer_processes_double_review_every_item(new_db, tmp_path):
    target = new_db()
    n = 60
    with ReviewStore(target, image_dir=tmp_path / "images", second_review_share=1.0) as store:
        shas = [_item(store, 100 + i, p=0.3 + 0.4 * i / n) for i in range(n)]
    ctx = mp.get_context("spawn")
    deadline = time.time() + 240
    procs = [ctx.Process(target=_reviewer, args=(str(target), str(tmp_path / "images"), f"r{i}", i, deadline))
             for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    with ReviewStore(target, image_dir=tmp_path / "images", second_review_share=1.0) as store:
        assert store.queue_stats()["queued"] == 0 and store.queue_stats()["leased"] == 0
        stream = []
        for sha in shas:
            item = store.item(sha)
            labels = [e for e in item["label_events"] if e["kind"] == "label"]
            stream += [{"sha256": sha, "reviewer": e["reviewer"], "label": e["label"]} for e in labels]
            stages = [e["stage"] for e in labels]
            reviewers = [e["reviewer"] for e in labels]
            assert len(set(reviewers)) == len(reviewers)  # nobody reviewed the same item twice
            if labels[0]["label"] == labels[1]["label"]:
                assert stages == ["first", "second"] and item["agreement_state"] == "agreed"
            else:
                assert stages == ["first", "second", "adjudication"] and item["agreement_state"] == "adjudicated"
                assert item["current_label"]["label"] == labels[2]["label"]
            claims = [e for e in item["queue_events"] if e["event"] == "claimed"]
            assert len(claims) == len(labels)  # each stage leased exactly once: never to two reviewers
        pairs = first_two_labels(stream)
        a = [v[0][1] for v in pairs.values()]
        b = [v[1][1] for v in pairs.values()]
        overall = store.agreement()["overall"]
        assert overall["n"] == n and overall["kappa"] == pytest.approx(round(cohen_kappa(a, b), 4))

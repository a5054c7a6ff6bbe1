"""Real processes on one database (SQLite file and PostgreSQL): concurrent reviewers, abandoned leases, a killed
export."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from core.review.store import ReviewStore, from_iso

REPO = Path(__file__).resolve().parent.parent
N_ITEMS = 1000
N_WORKERS = 8


def _populate(db: Path | str, n: int) -> list[str]:
    shas = []
    with ReviewStore(db) as store, store.batch():
        for i in range(n):
            sha = store.add_item(f"item-{i}".encode(), name=f"{i}.jpg", uploader="seed")
            p = 0.3 + 0.4 * ((i * 7919) % n) / n  # all in the review band, many distances
            store.record_scoring(sha, model_sha256="a" * 64, logit=0.0, probability=p, tier="review")
            shas.append(sha)
    return shas


def _reviewer(db: str, name: str, out: str, seed: int) -> None:
    """Claim and label until the queue is empty; sometimes skip or release first."""
    rng = random.Random(seed)
    done: list[list[str]] = []
    with ReviewStore(db) as store:
        while True:
            item = store.claim_next(name)
            if item is None:
                break
            assert item["lease_reviewer"] == name
            roll = rng.random()
            if roll < 0.05:
                store.skip(item["sha256"], name)
                continue
            if roll < 0.10:
                store.release(item["sha256"], name)
                continue
            label = rng.choice(["real", "fake", "unsure"])
            store.label(item["sha256"], label, name, seconds_spent=rng.random())
            done.append([item["sha256"], label])
    Path(out).write_text(json.dumps(done))


@pytest.mark.slow
def test_eight_processes_claim_and_label_1000_items(new_db, tmp_path, monkeypatch):
    monkeypatch.setenv("LADEDA_IMAGE_DIR", str(tmp_path / "images"))  # inherited by the forked reviewers
    db = new_db("shared")
    shas = _populate(db, N_ITEMS)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_reviewer, args=(str(db), f"rev{i}", str(tmp_path / f"out{i}.json"), i))
             for i in range(N_WORKERS)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    elapsed = time.monotonic() - t0
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]

    labelled: dict[str, tuple[str, str]] = {}
    for i in range(N_WORKERS):
        for sha, label in json.loads((tmp_path / f"out{i}.json").read_text()):
            assert sha not in labelled, f"{sha} labelled by two reviewers"
            labelled[sha] = (f"rev{i}", label)
    assert set(labelled) == set(shas)  # nothing lost
    assert sum(1 for i in range(N_WORKERS) if json.loads((tmp_path / f"out{i}.json").read_text())) > 1

    with ReviewStore(db) as store:
        rows = store.conn.execute(sa.text("SELECT sha256, reviewer, label, kind FROM label_events")).all()
        assert len(rows) == N_ITEMS and all(kind == "label" for *_, kind in rows)  # each label exactly once
        assert {sha: (rev, lab) for sha, rev, lab, _ in rows} == labelled
        assert store.queue_stats() == {"queued": 0, "leased": 0, "labelled": N_ITEMS}
        # replay the lease log: nobody claims an item someone else holds
        holder: dict[str, str | None] = {}
        events = store.conn.execute(sa.text("SELECT sha256, event, actor FROM queue_events ORDER BY id")).all()
        for sha, event, actor in events:
            if event == "claimed":
                assert holder.get(sha) is None, f"{sha} claimed by {actor} while held by {holder[sha]}"
                holder[sha] = actor
            elif event in ("released", "skipped", "labelled"):
                assert holder.get(sha) == actor, f"{actor} {event} {sha} held by {holder.get(sha)}"
                holder[sha] = None
            assert event != "expired"
        assert not any(holder.values())
    print(f"\n8 processes, {N_ITEMS} items on {store.dialect}: {elapsed:.1f} s, {len(events)} queue events")


ABANDON = textwrap.dedent("""
    import sys
    from core.review.store import ReviewStore
    store = ReviewStore(sys.argv[1])
    item = store.claim_next("ghost", lease_seconds=2)
    print(item["sha256"], flush=True)
    # exits without labelling or releasing
""")


def test_abandoned_lease_returns_the_item_to_another_process(new_db, tmp_path, monkeypatch):
    monkeypatch.setenv("LADEDA_IMAGE_DIR", str(tmp_path / "images"))
    db = new_db("r")
    (sha,) = _populate(db, 1)
    got = subprocess.run([sys.executable, "-c", ABANDON, str(db)], cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=True).stdout.strip()
    assert got == sha
    with ReviewStore(db) as store:
        (lease,) = store.queue.leases() or [None]  # still held (unless this machine is very slow)
        if lease is not None:
            assert lease["lease_reviewer"] == "ghost" and store.claim_next("alice") is None
            time.sleep(max(0.0, (from_iso(lease["lease_expires_at"]) - store.now()).total_seconds()) + 0.1)
        item = store.claim_next("alice")
        assert item["sha256"] == sha and item["lease_reviewer"] == "alice"
        assert item["why"].startswith("lease expired (ghost did not finish)")
        assert [e["event"] for e in store.item(sha)["queue_events"]] == ["enqueued", "claimed", "expired", "claimed"]


SLOW_EXPORT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from core.review.store import ReviewStore
    db, out, marker = sys.argv[1:4]
    def slow(done, total):
        Path(marker).touch()
        time.sleep(0.05)
    ReviewStore(db).export_batch(out, include_all_reviewed=True, progress=slow)
    Path(marker + ".finished").touch()
""")


def test_killed_export_leaves_no_partial_file_and_no_record(new_db, tmp_path, monkeypatch):
    monkeypatch.setenv("LADEDA_IMAGE_DIR", str(tmp_path / "images"))
    db, out, marker = new_db("r"), tmp_path / "exports", tmp_path / "started"
    with ReviewStore(db) as store, store.batch():
        for i in range(200):
            sha = store.add_item(os.urandom(2048), name=f"{i}.png", uploader=None)
            store.record_scoring(sha, model_sha256="a" * 64, logit=1.0, probability=0.8, tier="fake")
            store.label(sha, "real" if i % 2 else "fake", "alice")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_EXPORT, str(db), str(out), str(marker)], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "export finished or failed before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.3)  # well inside the 200 x 50 ms export
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not Path(str(marker) + ".finished").exists()
    leftovers = sorted(p.name for p in out.iterdir())
    assert leftovers and all(name.startswith(".") and name.endswith(".tmp") for name in leftovers), leftovers
    with ReviewStore(db) as store:
        assert store.export_history() == []  # not recorded: the items still count as not exported
        result = store.export_batch(out, include_all_reviewed=True)
    assert result["counts"]["items"] == 200 and result["counts"]["zip_images"] == 200
    finals = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert finals == sorted(Path(result[k]).name for k in ("csv", "jsonl", "zip"))

"""The learning loop on real SQLite and PostgreSQL stores scored by a real model: job leases, the queue's
order by the active model's uncertainty (recomputed after an activation), background learning that
triggers at N labels, activates a better candidate and holds back a worse one, labelled traffic seen by
the OOD guard, and the lease that keeps two processes from adapting at once."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.learning import background
from core.model.checkpoint import load_checkpoint
from core.model.registry import ModelRegistry
from core.paths import DEFAULT_TINY_MODEL
from core.review.actions import decide
from core.review.actions.learn import LEARN_JOB, learn_step, reprioritise
from core.review.store import ReviewStore, SCHEMA_VERSION
from core.scoring.analysis import analyse, record_analysis
from core.scoring.detector import Detector

from .conftest import graded_noise_png

REPO = Path(__file__).resolve().parent.parent
N_PER_CLASS = 24
UTC = dt.timezone.utc


class FakeClock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def tiny() -> Detector:
    return Detector.load(DEFAULT_TINY_MODEL, fast=False)


def _scored(store: ReviewStore, det: Detector, n: int = 2 * N_PER_CLASS, seed: int = 0) -> list[tuple[str, float]]:
    """Score ``n`` images through the product's own path, every one queued as a review-tier item."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        a = analyse(det, graded_noise_png(rng, i), name=f"i{i}.png", guardrails=False, encoder=None)
        a.decision.tier = "review"  # queue them all, as review-tier items
        record_analysis(store, a, name=f"i{i}.png", uploader="t")
        rows.append((a.score.sha256, a.score.logit))
    return rows


def _labels(rows, *, against_model: bool) -> list[tuple[str, str]]:
    """Constructed labels: ``against_model`` calls fake what the active model calls least fake (so a refit
    ranks far better); otherwise the labels agree with the model's own ranking (nothing to gain)."""
    order = sorted(rows, key=lambda r: r[1])
    lo, hi = order[:N_PER_CLASS], order[-N_PER_CLASS:]
    fake, real = (lo, hi) if against_model else (hi, lo)
    out = [(s, "fake") for s, _ in fake] + [(s, "real") for s, _ in real]
    perm = np.random.default_rng(1).permutation(len(out))
    return [out[k] for k in perm]


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "models", base=DEFAULT_TINY_MODEL)


# -- the job lease (store) ------------------------------------------------------------
def test_schema_has_the_job_leases_and_model_p(new_db, tmp_path):
    with ReviewStore(new_db(), image_dir=tmp_path / "images") as s:
        assert s.schema_version == SCHEMA_VERSION >= 5
        assert s.jobs.get("learn") is None


def test_job_lease_is_one_holder_at_a_time_and_expires(new_db, tmp_path):
    clock = FakeClock()
    target = new_db()
    with ReviewStore(target, clock=clock, image_dir=tmp_path / "i") as a, \
            ReviewStore(target, clock=clock, image_dir=tmp_path / "i") as b:  # two processes' connections
        assert a.jobs.acquire("learn", "A", 60)
        assert not b.jobs.acquire("learn", "B", 60)
        clock.advance(30)
        assert a.jobs.renew("learn", "A", 60)  # now until t=90
        clock.advance(45)
        assert not b.jobs.acquire("learn", "B", 60) and b.jobs.running("learn")["holder"] == "A"
        clock.advance(20)  # A crashed: it stopped renewing, its lease ran out at t=90
        assert b.jobs.running("learn") is None
        assert b.jobs.acquire("learn", "B", 60)
        assert not a.jobs.renew("learn", "A", 60)  # A lost it and knows
        assert not a.jobs.release("learn", "A", marker="x")  # and cannot release B's
        assert b.jobs.release("learn", "B", marker="50")
        row = a.jobs.get("learn")
        assert (row["holder"], row["expires_at"], row["done_marker"]) == (None, None, "50")
        assert a.jobs.acquire("learn", "A", 60)


# -- the queue follows the active model's uncertainty ------------------------------------------
def test_queue_order_follows_the_active_models_uncertainty_and_is_recomputed_on_activation(
        new_db, tmp_path, tiny, registry):
    with ReviewStore(new_db(), image_dir=tmp_path / "images") as s:
        rows = _scored(s, tiny)
        hand = rows[5][0]
        s.enqueue(rows[-1][0], by="lead", reason="customer complaint")  # already queued: keeps its reason
        # a manual send keeps its place rule: take one labelled item back by hand
        labels = _labels(rows, against_model=True)
        for sha, lab in labels[:44]:
            s.label(sha, lab, "alice")
        s.enqueue(labels[0][0], by="lead", reason="second look")
        before = {r["sha256"]: r["distance"] for r in s.queue_items(100, state="queued")}
        result = learn_step(s, registry, activate="auto", min_per_class=20)
        assert result.status == "activated", result.message
        assert result.reprioritised == len(rows) - 44  # every uncertainty-queued item got the new model's p
        active = load_checkpoint(registry.active().path)
        from core.learning.verdicts import stored_verdicts

        waiting = s.waiting_for_uncertainty()
        served = stored_verdicts(s.artifacts, active, waiting)
        queued = s.queue_items(100, state="queued")
        # claim order is the new model's |p - 0.5|; the hand-queued item kept its priority
        auto = [r for r in queued if r["sha256"] in served]
        assert [r["sha256"] for r in auto] == sorted(served, key=lambda h: (abs(served[h].probability - 0.5), h))[:len(auto)] \
            or [r["distance"] for r in auto] == sorted(r["distance"] for r in auto)
        for r in auto:
            assert r["distance"] == pytest.approx(abs(served[r["sha256"]].probability - 0.5), abs=1e-6)
        by_hand = next(r for r in queued if r["sha256"] == labels[0][0])
        assert by_hand["distance"] == before[labels[0][0]]
        assert any(before[r["sha256"]] != pytest.approx(r["distance"], abs=1e-6) for r in auto)
        first = s.claim_next("bob")
        assert first["why"].startswith("the model is least sure of this one (p = ")
        assert f"{served[first['sha256']].probability:.2f})" in first["why"]
        s.release(first["sha256"], "bob")
        # a roll back (any process) makes the priorities stale; the trigger recomputes them
        registry.rollback(by="lead")
        assert background.maybe_learn(s, registry, every=0, wait=True) is not None
        base = stored_verdicts(s.artifacts, load_checkpoint(DEFAULT_TINY_MODEL), waiting)
        for r in s.queue_items(100, state="queued"):
            if r["sha256"] in base:
                assert r["distance"] == pytest.approx(abs(base[r["sha256"]].probability - 0.5), abs=1e-6)
        assert reprioritise(s, registry) == 0  # already done for this version: nothing to do
        assert hand  # (silence: an uncertainty-queued item stays one)


# -- background learning ---------------------------------------------------------------------
def test_learning_triggers_at_n_labels_and_activates_a_better_candidate(new_db, tmp_path, tiny, registry,
                                                                        monkeypatch):
    monkeypatch.setenv("LADEDA_LEARN_EVERY", "40")
    monkeypatch.delenv("LADEDA_AUTO_ACTIVATE", raising=False)
    background.last_outcome = None
    with ReviewStore(new_db(), image_dir=tmp_path / "images") as s:
        rows = _scored(s, tiny)
        labels = _labels(rows, against_model=True)
        for sha, lab in labels[:39]:
            decide.label(s, sha, lab, "alice", learn=registry)
        background.wait(60)
        assert background.last_outcome is None and registry.versions() == []  # 39 < 40: nothing yet
        decide.label(s, *labels[39], "alice", learn=registry)  # the 40th: learning starts in the background
        background.wait(120)
        out = background.last_outcome
        assert out is not None and out.status == "activated", out and out.message
        assert out.label_events == 40 and out.after["auc"] > out.before["auc"]
        assert registry.active().version.id == out.version
        v = registry.active().version
        assert v.adapt["learn"]["decision"] == "activated" and v.adapt["provenance"]["n_labels"] == 40
        assert "reals_clearly_fake" in v.adapt["cv"]["after"] and "clear_share" in v.adapt["cv"]["after"]
        assert s.jobs.get(LEARN_JOB)["done_marker"] == "40" and s.jobs.get(LEARN_JOB)["holder"] is None
        decide.label(s, *labels[40], "alice", learn=registry)
        assert not background.due(s)  # 41 - 40 < 40


def test_a_worse_candidate_is_proposed_not_activated(new_db, tmp_path, tiny, registry):
    with ReviewStore(new_db(), image_dir=tmp_path / "images") as s:
        rows = _scored(s, tiny)
        for sha, lab in _labels(rows, against_model=False):  # the active model already ranks these perfectly
            s.label(sha, lab, "alice")
        out = learn_step(s, registry, activate="auto", min_per_class=20)
        assert out.status == "proposed" and "does not rank better" in out.message
        assert registry.active().version is None  # still the base
        v = registry.versions()[-1]
        assert v.id == out.version and v.adapt["learn"]["decision"] == "proposed"
        assert v.adapt["cv"]["before"]["auc"] >= v.adapt["cv"]["after"]["auc"]


def test_propose_only_setting_never_activates(new_db, tmp_path, tiny, registry, monkeypatch):
    monkeypatch.setenv("LADEDA_AUTO_ACTIVATE", "off")
    with ReviewStore(new_db(), image_dir=tmp_path / "images") as s:
        rows = _scored(s, tiny)
        for sha, lab in _labels(rows, against_model=True):
            s.label(sha, lab, "alice")
        out = learn_step(s, registry, min_per_class=20)
        assert out.status == "proposed" and out.after["auc"] > out.before["auc"]
        assert registry.active().version is None
        registry.activate(out.version, by="lead")  # activate stays as it is
        assert registry.active().version.id == out.version


def test_too_few_labels_is_refused_and_counted(new_db, tmp_path, tiny, registry):
    with ReviewStore(new_db(), image_dir=tmp_path / "images") as s:
        rows = _scored(s, tiny, n=10)
        for sha, _ in rows[:6]:
            s.label(sha, "real", "alice")
        out = learn_step(s, registry)
        assert out.status == "refused" and "Too few reviewer labels" in out.message
        assert s.jobs.get(LEARN_JOB)["done_marker"] == "6"  # the next try waits for N more labels


def test_labelled_traffic_counts_as_seen_by_the_ood_guard(tmp_path, tiny):
    from core.learning.ood import fit_guard
    from core.learning.parts import LearnedParts
    from core.scoring.analysis import learned_parts

    base = load_checkpoint(DEFAULT_TINY_MODEL)
    dim = base.state_dict["fc.weight"].numel()
    rng = np.random.default_rng(3)
    guard = fit_guard(rng.normal(size=(40, dim)).astype(np.float32), None, ["a"] * 20 + ["b"] * 20)
    with_ood = tmp_path / "tiny-ood.pt"
    base.with_updates(learning=LearnedParts(ood=guard).to_record()).save(with_ood)
    registry = ModelRegistry(tmp_path / "models", base=with_ood)
    det = Detector.load(with_ood, fast=False)
    with ReviewStore(tmp_path / "r.sqlite") as s:
        rows = _scored(s, det)
        for sha, lab in _labels(rows, against_model=True)[:44]:
            s.label(sha, lab, "alice")
        out = learn_step(s, registry, activate="propose", min_per_class=20)
        assert out.version is not None
        new = learned_parts(load_checkpoint(registry.path_of(registry.version(out.version)))).ood
        assert new.size == guard.size + 44
        from core.learning.features import get_ladeda, ladeda_key

        sha = _labels(rows, against_model=True)[0][0]
        pooled = get_ladeda(s.artifacts, sha, ladeda_key(base))
        assert new.check(pooled)["distance"] < guard.check(pooled)["distance"]
        # adapting the adapted version adds only the labels it had not seen
        registry.activate(out.version)
        for sha, lab in _labels(rows, against_model=True)[44:]:
            s.label(sha, lab, "alice")
        again = learn_step(s, registry, activate="propose", min_per_class=20)
        newer = learned_parts(load_checkpoint(registry.path_of(registry.version(again.version)))).ood
        assert newer.size == guard.size + 48


_HOLDER = r"""
import json, sys, time
sys.path.insert(0, {repo!r})
import core.review.actions.adapt as door
from core.model.registry import ModelRegistry
from core.review.actions.learn import learn_step
from core.review.store import ReviewStore
real = door.adapt_from_store
def timed(*a, **k):
    t0 = time.time()
    out = real(*a, **k)
    time.sleep(1.5)  # hold the step long enough for the other process to try
    with open({log!r}, "a") as fh:
        fh.write(json.dumps({{"start": t0, "end": time.time()}}) + "\n")
    return out
door.adapt_from_store = timed
with ReviewStore({db!r}, image_dir={images!r}) as s:
    while time.time() < {go}:
        time.sleep(0.01)
    out = learn_step(s, ModelRegistry({models!r}, base={base!r}), activate="propose", min_per_class=20)
    print(out.status)
"""


def test_the_lease_keeps_two_processes_from_adapting_at_once(new_db, tmp_path, tiny):
    import time

    target = new_db()
    with ReviewStore(target, image_dir=tmp_path / "images") as s:
        rows = _scored(s, tiny)
        for sha, lab in _labels(rows, against_model=True):
            s.label(sha, lab, "alice")
    log = tmp_path / "adapts.jsonl"
    go = time.time() + 8
    code = _HOLDER.format(repo=str(REPO), log=str(log), db=str(target), images=str(tmp_path / "images"), go=go,
                          models=str(tmp_path / "models"), base=str(DEFAULT_TINY_MODEL))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    statuses = sorted(o[0].strip().splitlines()[-1] for o in outs)
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    runs.sort(key=lambda r: r["start"])
    for a, b in zip(runs, runs[1:]):
        assert a["end"] <= b["start"], "two processes adapted at once"
    assert "busy" in statuses or len(runs) == 2  # either one found it held, or they ran one after the other


def test_core_learn_command_runs_one_step_through_the_same_door(tmp_path, tiny, monkeypatch, capsys):
    from core.__main__ import main

    monkeypatch.setenv("LADEDA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LADEDA_MODEL", str(DEFAULT_TINY_MODEL))
    db = tmp_path / "r.sqlite"
    with ReviewStore(db) as s:
        rows = _scored(s, tiny)
        for sha, lab in _labels(rows, against_model=True):
            s.label(sha, lab, "alice")
    assert main(["learn", "--db", str(db), "--propose", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["status"] == "proposed" and out["n_labels"] == 48 and out["after"]["auc"] > out["before"]["auc"]
    assert ModelRegistry().versions()[-1].id == out["version"]
    assert main(["learn", "--db", str(db), "--priorities", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["reprioritised"] == 0  # all labelled


def test_an_adapted_active_version_is_compared_on_labels_it_has_not_learned_from(tmp_path, tiny, registry):
    with ReviewStore(tmp_path / "r.sqlite") as s:
        rows = _scored(s, tiny)
        labels = _labels(rows, against_model=True)
        later = [next(x for x in labels if x[1] == c) for c in ("fake", "real")]
        later += [x for x in labels if x not in later and x[1] == "fake"][:3] + \
            [x for x in labels if x not in later and x[1] == "real"][:3]
        for sha, lab in [x for x in labels if x not in later]:
            s.label(sha, lab, "alice")
        first = learn_step(s, registry, activate="auto", min_per_class=10)
        assert first.status == "activated" and first.before["compared_on"] == "all labels"
        for sha, lab in later:  # 8 labels the active version never saw
            s.label(sha, lab, "alice")
        again = learn_step(s, registry, activate="auto", min_per_class=10)
        assert again.before["compared_on"] == "labels the active version had not learned from"
        assert again.before["n"] == again.after["n"] == 8


# -- the safety check on reals called clearly fake ------------------------------------------------
def test_reals_rise_is_held_back_only_when_the_labels_can_tell_it_from_the_target():
    from core.learning.base import FUSED_TIER_TARGETS
    from core.review.actions.learn import REALS_CLEARLY_FAKE_TARGET, _decide, reals_rise_is_real

    assert REALS_CLEARLY_FAKE_TARGET == FUSED_TIER_TARGETS[0]  # the rate the tiers are fitted for
    assert not reals_rise_is_real(0.0, 0.0, 14) and not reals_rise_is_real(0.1, 0.05, 20)  # no rise
    assert not reals_rise_is_real(0.0, 2 / 14, 14)  # P(≥2 of 14 | 5 %) = 0.15: chance
    assert reals_rise_is_real(0.0, 3 / 14, 14)  # P(≥3 of 14 | 5 %) = 0.03: a real rise
    assert not reals_rise_is_real(0.0, 3 / 40, 40) and reals_rise_is_real(0.0, 6 / 40, 40)
    assert reals_rise_is_real(0.0, 0.2, None)  # without a count, any rise counts

    def report(auc_b, auc_a, rf_b, rf_a, n):
        return {"cv": {"before": {"auc": auc_b, "reals_clearly_fake": rf_b},
                       "after": {"auc": auc_a, "reals_clearly_fake": rf_a, "n_reals": n}}}

    ok, why = _decide(report(0.712, 0.829, 0.0, 2 / 14, 14))  # the museum-quiz step that used to stall
    assert ok and "within what 14 reals can tell" in why
    ok, why = _decide(report(0.712, 0.829, 0.0, 4 / 14, 14))
    assert not ok and "more reals called clearly fake" in why
    ok, why = _decide(report(0.80, 0.79, 0.0, 0.0, 14))
    assert not ok and "does not rank better" in why


def test_the_learner_thread_yields_the_cpu_to_analyses():
    """Its own thread at nice 19 (the page's threads keep theirs) and BLAS held to one thread while it fits."""
    import threading

    from threadpoolctl import threadpool_info

    seen = {}

    def learner():
        background._yield_cpu()
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        with background._blas_in_this_thread():
            seen["blas"] = {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=learner)
    t.start()
    t.join()
    assert seen["nice"] == background.LEARNER_NICE == 19
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # this thread untouched
    assert seen["blas"] == {1}  # numpy's BLAS, held to one thread

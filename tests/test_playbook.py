"""The Monitor playbook follows the data in a real store: a false-positive spike, a
false-negative spike, drift in the scores (with what changed), and plain monitoring."""
from __future__ import annotations

import datetime as _dt

import numpy as np
import pytest

from core.review import playbook
from core.review.store import ReviewStore

NOW = _dt.datetime(2026, 3, 1, 12, 0, tzinfo=_dt.timezone.utc)
TIERS = {"real_below": 0.2, "fake_at_or_above": 0.8}
#: The same 120 scores in both windows: no drift unless a test asks for it (PSI and KS exactly 0).
SCORES = [float(p) for p in np.linspace(0.02, 0.98, 120)]
N_FAKE_CALLS = sum(p >= 0.8 for p in SCORES)  # 23
N_REAL_CALLS = sum(p < 0.2 for p in SCORES)  # 23


@pytest.fixture()
def world(tmp_path):
    clock = {"t": NOW}
    store = ReviewStore(tmp_path / "review.sqlite", clock=lambda: clock["t"], synchronous="NORMAL")
    yield store, clock
    store.close()


def _tier(p: float) -> str:
    return "fake" if p >= TIERS["fake_at_or_above"] else ("real" if p < TIERS["real_below"] else "review")


def _window(store, clock, tag: str, days_ago: float, scores, *, fp_every: int = 0, fn_every: int = 0,
            ext: str = ".jpg", uploader: str = "desk", size: int = 30) -> None:
    """Score ``scores`` around ``days_ago`` and label every clear call (every n-th one overturned)."""
    fake_calls = real_calls = 0
    for i, p in enumerate(scores):
        clock["t"] = NOW - _dt.timedelta(days=days_ago, minutes=i)
        sha = store.add_item(f"{tag}-{i}".encode() * size, name=f"{tag}-{i}{ext}", uploader=uploader)
        tier = _tier(p)
        store.record_scoring(sha, model_sha256="m" * 64, logit=float(np.log(p / (1 - p))), probability=p,
                             tier=tier, auto_queue=False)
        if tier == "fake":
            fake_calls += 1
            store.label(sha, "real" if fp_every and fake_calls % fp_every == 0 else "fake", "ana")
        elif tier == "real":
            real_calls += 1
            store.label(sha, "fake" if fn_every and real_calls % fn_every == 0 else "real", "bo")
    clock["t"] = NOW


def test_a_false_positive_spike_suggests_a_higher_threshold(world):
    store, clock = world
    _window(store, clock, "ref", 20, SCORES, fp_every=20)  # reference: 1 of 23 fake calls overturned
    _window(store, clock, "new", 2, SCORES, fp_every=2)  # recent: half of them
    book = playbook.evaluate(store, tiers=TIERS)
    assert book.branch.key == "false_positive_spike" and book.branch.node == "C"
    assert [b.key for b in book.active] == ["false_positive_spike"]
    fig = book.branch.figures
    assert fig["calls"] == N_FAKE_CALLS and fig["overturned"] == N_FAKE_CALLS // 2
    assert fig["reference_overturned"] == 1
    assert f"{N_FAKE_CALLS // 2} of {N_FAKE_CALLS} labelled clearly-fake calls" in book.branch.evidence[0]
    keys = [a.key for a in book.branch.actions]
    assert keys == ["raise_threshold", "recalibrate"]
    # the suggested threshold really brings the recent labelled share under the target
    t = fig["suggested_threshold"]
    assert t is not None and t > TIERS["fake_at_or_above"]
    recent = [r for r in store.labelled_items(since=book.recent_window[0], limit=None) if r["tier"] == "fake"]
    kept = [r for r in recent if r["probability"] >= t]
    assert kept and sum(r["label"] == "real" for r in kept) / len(kept) <= playbook.TARGET_SHARE
    drift = {b.key: b for b in book.checks}["drift"]
    assert drift.judged and not drift.active and drift.figures["psi"] == pytest.approx(0.0, abs=1e-9)


def test_a_false_negative_spike_leads_to_exporting_hard_negatives(world, tmp_path):
    store, clock = world
    _window(store, clock, "ref", 20, SCORES)
    _window(store, clock, "new", 2, SCORES, fn_every=3)
    book = playbook.evaluate(store, tiers=TIERS)
    assert book.branch.key == "false_negative_spike" and book.branch.node == "D"
    assert book.branch.figures["calls"] == N_REAL_CALLS and book.branch.figures["overturned"] == N_REAL_CALLS // 3
    export = book.branch.actions[0]
    assert export.key == "export_hard_negatives" and export.params["since"] == book.recent_window[0]
    # the action's parameters are the store's export door: the zip holds exactly the missed fakes
    res = store.export_batch(tmp_path / "out", since=export.params["since"], only_new=export.params["only_new"],
                             exported_by="ana")
    assert res["counts"]["hard_negatives"] == N_REAL_CALLS // 3


def test_drift_says_what_changed(world):
    store, clock = world
    _window(store, clock, "ref", 20, SCORES)
    shifted = [min(0.98, p * 0.5 + 0.45) for p in SCORES]  # everything moves towards 'fake'
    _window(store, clock, "new", 2, shifted, ext=".png", uploader="scraper", size=90)
    book = playbook.evaluate(store, tiers=TIERS)
    assert book.branch.key == "drift" and book.branch.node == "E"
    assert book.branch.figures["alert"] == "alert" and book.branch.figures["psi"] > 0.25
    changed = book.branch.evidence[-1]
    assert "format .png: 0% of the reference items → 100% of recent ones" in changed
    assert "source (uploader) scraper" in changed and "median file size" in changed
    assert [a.key for a in book.branch.actions] == ["recalibrate"]


def test_steady_data_keeps_monitoring(world):
    store, clock = world
    _window(store, clock, "ref", 20, SCORES)
    _window(store, clock, "new", 2, SCORES, fp_every=25, fn_every=25)  # one slip each: well below a spike
    book = playbook.evaluate(store, tiers=TIERS)
    assert book.branch.key == "monitor" and book.branch.node == "B" and book.branch.judged
    assert not book.active and all(b.judged for b in book.checks)
    assert book.to_json()["branch"] == "monitor"


def test_an_empty_store_says_what_could_not_be_judged(world):
    store, _ = world
    book = playbook.evaluate(store)
    assert book.branch.key == "monitor" and not book.branch.judged
    assert "Not judged for lack of data" in book.branch.evidence[-1]


def test_raise_threshold_activates_a_version_that_can_be_rolled_back(tmp_path):
    from core.errors import CalibrationError
    from core.model.checkpoint import load_checkpoint
    from core.model.registry import ModelRegistry

    from .conftest import save_random_tiny

    base = save_random_tiny(tmp_path / "base.pt", tiers={"real_below": 0.3, "fake_at_or_above": 0.7})
    registry = ModelRegistry(tmp_path / "models", base=base)
    ckpt = load_checkpoint(base)
    version = playbook.raise_threshold(registry, ckpt, 0.85, by="lead")
    active = registry.active()
    assert active.version.id == version.id and "C1" in version.note
    served = load_checkpoint(active.path)
    assert served.tiers["fake_at_or_above"] == pytest.approx(0.85) and served.tiers["real_below"] == pytest.approx(0.3)
    with pytest.raises(CalibrationError):
        playbook.raise_threshold(registry, served, 0.8, by="lead")
    assert registry.rollback(by="lead").version is None

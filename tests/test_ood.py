"""The out-of-distribution guard: held-out sources trip it, reviewer labels count as seen, policy abstains."""
from __future__ import annotations

import numpy as np
import pytest

from core.learning.ood import OodGuard, fit_guard
from core.scoring.policy import decide


def _clusters(rng, centres, n, dim, spread=0.15):
    rows, groups = [], []
    for name, c in centres.items():
        rows.append(c + spread * rng.normal(size=(n, dim)))
        groups += [name] * n
    return np.concatenate(rows).astype(np.float32), groups


def _sources(rng, n_sources: int, dim: int = 32):
    """LaDeDa-like (``dim``) and CLIP-like (16) features of ``n_sources`` clustered sources, 30 rows each."""
    centres = {f"s{i}": rng.normal(size=dim) for i in range(n_sources)}
    lad, groups = _clusters(rng, centres, 30, dim)
    clip, _ = _clusters(rng, {k: rng.normal(size=16) for k in centres}, 30, 16)
    return lad, clip, groups


def test_far_images_trip_and_reference_images_do_not(tmp_path):
    rng = np.random.default_rng(0)
    dim = 32
    lad, clip, groups = _sources(rng, 4, dim)
    guard = fit_guard(lad, clip, groups)
    report = guard.fit_report["clip+ladeda"]
    assert report["held_out_source_trip_rate"] > report["seen_trip_rate"]
    assert report["seen_trip_rate"] <= 0.10
    inside = guard.check(lad[3], clip[3])
    far_lad, far_clip = rng.normal(size=dim) * 3, rng.normal(size=16) * 3
    outside = guard.check(far_lad, far_clip)
    assert not inside["tripped"] and outside["tripped"]
    assert outside["distance"] > outside["threshold"] > inside["distance"]
    assert set(outside) >= {"distance", "threshold", "tripped"} and outside["space"] == "clip+ladeda"
    # without the encoder the LaDeDa-only threshold applies
    assert guard.check(far_lad)["space"] == "ladeda"
    # labelled by a reviewer: now seen
    seen = guard.with_seen(np.stack([far_lad + 0.01 * rng.normal(size=dim) for _ in range(5)]),
                           np.stack([far_clip + 0.01 * rng.normal(size=16) for _ in range(5)]))
    assert seen.size == guard.size + 5
    assert not seen.check(far_lad, far_clip)["tripped"]


def test_record_round_trip_keeps_decisions():
    rng = np.random.default_rng(1)
    lad, groups = _clusters(rng, {"a": rng.normal(size=8), "b": rng.normal(size=8)}, 20, 8)
    guard = fit_guard(lad, None, groups)
    again = OodGuard.from_record(guard.to_record())
    q = rng.normal(size=8) * 2
    a, b = guard.check(q), again.check(q)
    assert a["tripped"] == b["tripped"] and abs(a["distance"] - b["distance"]) < 1e-2


def test_policy_gives_only_review_when_tripped():
    tiers = {"real_below": 0.3, "fake_at_or_above": 0.7}
    ood = {"distance": 2.5, "threshold": 1.8, "tripped": True}
    d = decide(0.95, tiers, None, ood=ood)
    assert d.tier == "review" and d.base_tier == "fake"
    assert any("unlike the images this model was calibrated on (distance 2.50" in r.lower() for r in d.reasons)
    assert decide(0.95, tiers, None, ood={**ood, "tripped": False}).tier == "fake"
    assert decide(0.05, tiers, None, ood=ood).tier == "review"


def test_held_out_trip_threshold_withholds_only_the_far_tail_of_a_new_source():
    """With ``held_out_trip`` the threshold is the distance that this share of the held-out sources'
    images exceed (leave-one-source-out, each source weighing the same), not the one that separates
    new sources from seen ones: most images of a new source keep their verdict."""
    rng = np.random.default_rng(3)
    dim = 32
    lad, clip, groups = _sources(rng, 5, dim)
    strict = fit_guard(lad, clip, groups)
    tail = fit_guard(lad, clip, groups, held_out_trip=0.10)
    rep = tail.fit_report["clip+ladeda"]
    assert rep["rule"] == "held_out_trip" and strict.fit_report["clip+ladeda"]["rule"] == "youden_j"
    assert rep["held_out_source_trip_rate"] == pytest.approx(0.10, abs=0.02)
    assert strict.fit_report["clip+ladeda"]["held_out_source_trip_rate"] > 0.5
    assert tail.thresholds["clip+ladeda"] > strict.thresholds["clip+ladeda"]
    # a new cluster (a sixth source) mostly keeps its verdicts under the tail rule, none under the strict one
    new_lad = rng.normal(size=dim) + 0.15 * rng.normal(size=(20, dim))
    new_clip = rng.normal(size=16) + 0.15 * rng.normal(size=(20, 16))
    tripped = [tail.check(a, b)["tripped"] for a, b in zip(new_lad, new_clip)]
    assert np.mean(tripped) < 0.5 and all(strict.check(a, b)["tripped"] for a, b in zip(new_lad, new_clip))

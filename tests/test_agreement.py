"""core.review.agreement: who gets a blind second review, and Cohen's κ against hand-computed values."""
from __future__ import annotations

import pytest

from core.review import agreement as A


def test_kappa_matches_the_textbook_example():
    # 50 items: both fake 20, A fake / B real 5, A real / B fake 10, both real 15.
    # p_o = 35/50 = 0.70; p_e = (25·30 + 25·20) / 50² = 0.50; κ = (0.70 − 0.50) / 0.50 = 0.40
    a = ["fake"] * 25 + ["real"] * 25
    b = ["fake"] * 20 + ["real"] * 5 + ["fake"] * 10 + ["real"] * 15
    assert A.cohen_kappa(a, b) == pytest.approx(0.40)
    assert A.cohen_kappa(a, a) == pytest.approx(1.0)
    assert A.cohen_kappa(["fake"] * 3, ["fake"] * 3) is None  # chance agreement is 1: undefined
    assert A.cohen_kappa([], []) is None


def test_pairs_use_the_first_label_of_the_first_two_distinct_reviewers():
    events = [  # item x: ana, then ana again (ignored), then bo; item y: bo then ana; item z: only ana
        {"sha256": "x", "reviewer": "ana", "label": "fake"}, {"sha256": "x", "reviewer": "ana", "label": "real"},
        {"sha256": "x", "reviewer": "bo", "label": "fake"}, {"sha256": "y", "reviewer": "bo", "label": "real"},
        {"sha256": "y", "reviewer": "ana", "label": "fake"}, {"sha256": "z", "reviewer": "ana", "label": "real"},
        {"sha256": "w", "reviewer": "ana", "label": "real"}, {"sha256": "w", "reviewer": "cy", "label": "real"},
        {"sha256": "v", "reviewer": "cy", "label": "fake"}, {"sha256": "v", "reviewer": "ana", "label": "fake"},
    ]
    per_pair, overall = A.pair_agreements(events)
    by = {p.reviewers: p for p in per_pair}
    assert set(by) == {("ana", "bo"), ("ana", "cy")}
    # ana/bo: (fake, fake) and (fake, real) → p_o 0.5; ana: fake 2; bo: fake 1 real 1 → p_e 0.5 → κ 0
    assert by[("ana", "bo")].n == 2 and by[("ana", "bo")].agreement == 0.5
    assert by[("ana", "bo")].kappa == pytest.approx(0.0)
    # overall, first vs second reviewer: [fake, real, real, fake] vs [fake, fake, real, fake]
    # p_o = 3/4; p_e = (2·3 + 2·1)/16 = 0.5; κ = 0.5
    assert overall.n == 4 and overall.kappa == pytest.approx(0.5)


def test_second_review_for_overturns_and_a_stable_sample():
    sha = "0" * 64  # hash position 0: inside any positive share
    assert A.second_review_reason("f" * 64, "real", "fake", share=0.0).startswith("second review: the first label")
    assert A.second_review_reason("f" * 64, "review", "fake", share=0.1) is None
    assert "quality sample" in A.second_review_reason(sha, "review", "real", share=0.1)
    shas = [f"{i:08x}" + "0" * 56 for i in range(0, 2 ** 32, 2 ** 32 // 1000)]
    share = sum(A.sampled_for_second_review(s, 0.1) for s in shas) / len(shas)
    assert share == pytest.approx(0.1, abs=0.01)


def test_reviewer_vs_model_confusion():
    rows = [{"tier": "fake", "label": "real"}, {"tier": "fake", "label": "fake"}, {"tier": "review", "label": "unsure"},
            {"tier": "fake", "label": "real"}]
    m = A.reviewer_vs_model(rows)
    assert m["fake"] == {"real": 2, "fake": 1, "unsure": 0} and m["review"]["unsure"] == 1

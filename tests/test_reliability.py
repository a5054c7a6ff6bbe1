"""Per-segment reliability from the labels in a real store: the line appears once the segment
has enough labels, is replaced by "too few" below that, and counts only its own segment."""
from __future__ import annotations

import pytest

from core.review.reliability import MIN_LABELS, SegmentTable, describe, reliability_line, segment_of, wilson
from core.review.store import ReviewStore

NO_FACE_LOW_JPEG = {"faces": [], "jpeg_quality": 55.0}
WITH_FACE = {"faces": [{"box": [0, 0, 40, 40], "score": 0.1}], "jpeg_quality": 55.0}


@pytest.fixture()
def store(tmp_path):
    s = ReviewStore(tmp_path / "review.sqlite")
    yield s
    s.close()


def _item(store, i: int, tier: str, p: float, guardrails: dict, label: str | None, reviewer: str = "ana") -> str:
    sha = store.add_item(f"image-{i}".encode() * 20, name=f"{i}.jpg")
    store.record_scoring(sha, model_sha256="m" * 64, logit=0.0, probability=p, tier=tier, guardrails=guardrails,
                         auto_queue=False)
    if label:
        store.label(sha, label, reviewer)
    return sha


def test_the_segment_line_appears_once_there_are_enough_labels(store):
    # 29 clearly-real items without a face at JPEG quality 55; 6 of them were fakes the model missed
    for i in range(MIN_LABELS - 1):
        _item(store, i, "real", 0.05, NO_FACE_LOW_JPEG, "fake" if i < 6 else "real")
    line = reliability_line(store, "real", NO_FACE_LOW_JPEG)
    assert not line.enough and line.rate is None and line.n == MIN_LABELS - 1
    assert "%" not in line.text and "Too few labels" in line.text and f"only {MIN_LABELS - 1}" in line.text

    _item(store, 99, "real", 0.05, NO_FACE_LOW_JPEG, "real")  # the 30th
    line = reliability_line(store, "real", NO_FACE_LOW_JPEG)
    assert line.enough and line.n == MIN_LABELS and line.overturned == 6
    assert line.rate == pytest.approx(6 / 30)
    assert line.text.startswith("On 30 labelled items in the clearly-real tier with no face and JPEG quality "
                                "below 70, reviewers overturned 20%")
    lo, hi = line.interval
    assert lo < 0.2 < hi and f"{lo:.0%}–{hi:.0%}" in line.text


def test_only_the_items_own_segment_counts(store):
    for i in range(MIN_LABELS):
        _item(store, i, "real", 0.05, NO_FACE_LOW_JPEG, "real")
    for i in range(100, 110):  # other segments: a face, another tier, unsure labels, unlabelled items
        _item(store, i, "real", 0.05, WITH_FACE, "fake")
        _item(store, i + 50, "fake", 0.95, NO_FACE_LOW_JPEG, "real")
        _item(store, i + 100, "real", 0.05, NO_FACE_LOW_JPEG, "unsure")
        _item(store, i + 150, "real", 0.05, NO_FACE_LOW_JPEG, None)
    table = SegmentTable.from_store(store)
    assert table.line("real", NO_FACE_LOW_JPEG).n == MIN_LABELS
    assert table.line("real", NO_FACE_LOW_JPEG).overturned == 0
    face = table.line("real", WITH_FACE)
    assert face.n == 10 and not face.enough and "with a face" in face.text
    assert table.line("fake", NO_FACE_LOW_JPEG).n == 10
    assert table.line("review", {"faces": [], "jpeg_quality": None}).n == 0
    assert "no labelled items" in table.line("review", {}).text
    # a model filter keeps only that model's scorings
    assert SegmentTable.from_store(store, model_sha256="x" * 64).total == 0


def test_an_undone_label_no_longer_counts(store):
    sha = _item(store, 1, "fake", 0.9, NO_FACE_LOW_JPEG, "real", reviewer="bo")
    assert SegmentTable.from_store(store).line("fake", NO_FACE_LOW_JPEG).overturned == 1
    store.undo_last("bo")
    assert store.item(sha)["current_label"] is None
    assert SegmentTable.from_store(store).line("fake", NO_FACE_LOW_JPEG).n == 0


def test_segments_come_from_the_guardrail_findings():
    assert segment_of("review", {"faces": [], "jpeg_quality": None}) == ("review", False, "none")
    assert segment_of("fake", {"faces": [{}], "quality": {"jpeg_quality": 85}}) == ("fake", True, "usual")
    assert segment_of("real", None) == ("real", False, "none")
    assert describe(("fake", True, "usual")) == "in the clearly-fake tier with a face and JPEG quality 70 or above"
    lo, hi = wilson(18, 100)
    assert 0.11 < lo < 0.12 and 0.26 < hi < 0.28  # the textbook Wilson interval of 18/100


def test_a_label_counts_against_the_scoring_it_was_given_on(store):
    """A re-score after the label (another model, a new calibration) does not move the label's segment."""
    sha = _item(store, 1, "fake", 0.9, NO_FACE_LOW_JPEG, "real")  # overturned on a clearly-fake verdict
    store.record_scoring(sha, model_sha256="n" * 64, logit=0.0, probability=0.1, tier="real",
                         guardrails=WITH_FACE, auto_queue=False)
    unscored = store.add_item(b"never scored" * 20, name="x.jpg")
    store.label(unscored, "fake", "ana")  # no scoring at all: nothing to count
    table = SegmentTable.from_store(store)
    assert table.line("fake", NO_FACE_LOW_JPEG).n == 1 and table.line("fake", NO_FACE_LOW_JPEG).overturned == 1
    assert table.line("real", WITH_FACE).n == 0 and table.total == 1
    assert SegmentTable.from_store(store, model_sha256="n" * 64).total == 0

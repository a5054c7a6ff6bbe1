"""Monitor shows label agreement from blind double reviews: kappa overall and per pair, and reviewers
against the model (AppTest on the real app and a real store)."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from core.review.agreement import cohen_kappa
from core.review.store import ReviewStore

from .conftest import REPO, save_random_tiny


@pytest.mark.slow
def test_monitor_shows_kappa_from_double_reviews(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    monkeypatch.setenv("LADEDA_DATA_DIR", str(data_dir))
    monkeypatch.setenv("LADEDA_MODEL", str(save_random_tiny(tmp_path / "tiny.pt")))
    monkeypatch.setenv("LADEDA_SECOND_REVIEW_SHARE", "1.0")
    first = ["fake", "fake", "real", "real", "fake", "real", "fake", "real"]
    second = ["fake", "real", "real", "real", "fake", "fake", "fake", "real"]
    with ReviewStore(data_dir / "review.sqlite") as store:
        for i, (a, b) in enumerate(zip(first, second)):
            sha = store.add_item(f"img-{i}".encode() * 20, name=f"{i}.png")
            store.record_scoring(sha, model_sha256="m" * 64, logit=0.0, probability=0.5, tier="review")
            store.claim_next("ana")
            store.label(sha, a, "ana")
            assert store.claim_next("bo")["sha256"] == sha
            store.label(sha, b, "bo")
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=120).run()
    at.switch_page("views/monitor.py")
    at.run()
    assert not at.exception
    values = {m.label: m.value for m in at.metric}
    assert values["Double-reviewed items"] == "8"
    assert float(values["Cohen's κ (first vs second)"]) == pytest.approx(cohen_kappa(first, second), abs=0.005)
    pairs = next(d.value for d in at.dataframe if "κ" in d.value.columns)
    assert list(pairs["reviewers"]) == ["ana · bo"] and list(pairs["items"]) == [8]
    assert "100% of first labels" in " ".join(c.value for c in at.caption)

"""The Model (Calibration) page adapts on reviewer labels through the same door as `core adapt`, and
Inspect-style panels list similar reviewed items with duplicates first (AppTest, real store, real Tiny)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.model.registry import ModelRegistry
from core.paths import DEFAULT_TINY_MODEL
from core.review.store import ReviewStore
from core.scoring.analysis import analyse, record_analysis
from core.scoring.detector import Detector

from .conftest import REPO, signed_in_app
from .conftest import graded_noise_png
from .test_adapt import N_PER_CLASS, _label


def test_adapt_panel_fits_reports_out_of_fold_and_saves_a_version(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    model = tmp_path / "tiny.pt"
    shutil.copy(DEFAULT_TINY_MODEL, model)
    monkeypatch.setenv("LADEDA_DATA_DIR", str(data_dir))
    monkeypatch.setenv("LADEDA_MODEL", str(model))
    det = Detector.load(model, fast=False)
    rng = np.random.default_rng(0)
    with ReviewStore(data_dir / "review.sqlite") as store:
        rows = []
        for i in range(2 * N_PER_CLASS):
            a = analyse(det, graded_noise_png(rng, i), name=f"i{i}.png", guardrails=False, encoder=None)
            record_analysis(store, a, name=f"i{i}.png", uploader="t")
            rows.append((a.score.sha256, a.score.logit))
        _label(store, rows, N_PER_CLASS, np.random.default_rng(1))
    at = signed_in_app("calibration")
    next(b for b in at.button if b.key == "adapt-fit").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    cv = next(d.value for d in at.dataframe if "review_share" in d.value.columns)
    assert list(cv["model"]) == ["before", "after"] and cv["auc"].iloc[1] > cv["auc"].iloc[0]
    next(b for b in at.button if b.key == "adapt-save").click()
    at.run()
    versions = ModelRegistry(data_dir / "models", base=model).versions()
    assert len(versions) == 1 and "adapt" in versions[0].note


def test_similar_items_panel_flags_a_labelled_copy(tmp_path, monkeypatch):
    import io

    from PIL import Image

    data_dir = tmp_path / "data"
    det = Detector.load(DEFAULT_TINY_MODEL, fast=False)
    rng = np.random.default_rng(3)
    original = graded_noise_png(rng, 0)
    with ReviewStore(data_dir / "review.sqlite") as store:
        a = analyse(det, original, name="seen.png", guardrails=False, encoder=None)
        record_analysis(store, a, name="seen.png", uploader="t")
        store.label(a.score.sha256, "fake", "ana")
    # a re-encoded copy of the labelled image, as a new upload would bring it
    buf = io.BytesIO()
    Image.open(io.BytesIO(original)).convert("RGB").save(buf, "JPEG", quality=85)
    script = f'''
import io
from PIL import Image
from core.review.store import ReviewStore
from dashboard import learning_panels
store = ReviewStore({str(data_dir / "review.sqlite")!r})
learning_panels.similar_items_panel(store, "{'0' * 64}", Image.open(io.BytesIO({buf.getvalue()!r})), key="t")
'''
    at = AppTest.from_string(script, default_timeout=120).run()
    assert not at.exception
    assert any("re-encoded copy of it, was judged before" in w.value and "near duplicate labelled fake by ana"
               in w.value for w in at.warning)
    assert not any("by ana" in c.value for c in at.caption)  # the folded list is not drawn
    at.session_state["t-similar"] = True  # the reviewer opens it
    at.run()
    assert not at.exception
    assert any("**fake** by ana · near duplicate" in c.value and "seen.png" in c.value for c in at.caption)
    thumbs = [i.url for img in at.image for i in img.proto.imgs if i.alt == "labelled fake"]
    assert thumbs and thumbs[0].startswith("data:image/png;base64,"), "the neighbour's thumbnail is shown"


@pytest.mark.slow
def test_header_names_the_calibration_that_serves(tmp_path, monkeypatch):
    """With the encoder installed the verdicts are the fused value's: the header names its calibration,
    not LaDeDa's own; without the encoder, LaDeDa's."""
    from core.encoders.clip import load_encoder
    from core.model.checkpoint import load_checkpoint
    from core.paths import DEFAULT_MODEL

    monkeypatch.setenv("LADEDA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LADEDA_MODEL", str(DEFAULT_MODEL))
    ck = load_checkpoint(DEFAULT_MODEL)
    fused_version = ck.learning["calibration"]["version"]
    assert fused_version != ck.calibration_version
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=300).run()
    assert not at.exception
    panel = " ".join(c.value for c in at.sidebar.caption)  # the model panel names the serving calibration
    expected = fused_version if load_encoder() is not None else ck.calibration_version
    assert f"Calibration: {expected}" in panel, panel
    assert any("of the fused LaDeDa + CLIP logit" in c.value for c in at.sidebar.caption) == (load_encoder() is not None)
    # the Model versions table on the Calibration page shows the thresholds that decide the verdicts
    at.switch_page("views/calibration.py")
    at.run()
    assert not at.exception
    base = next(d.value for d in at.dataframe if "fake at or above" in d.value.columns).iloc[0]
    serving = ck.learning["tiers"] if load_encoder() is not None else ck.tiers
    assert base["version"] == "base" and bool(base["active"])
    assert base["real below"] == pytest.approx(serving["real_below"])
    assert base["fake at or above"] == pytest.approx(serving["fake_at_or_above"])
    assert (expected in base["calibration"]) == (load_encoder() is not None)

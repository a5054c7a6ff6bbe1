"""The screens with the bundled model and the CLIP encoder: each part's share on the card, and the two
maps named for their parts, CLIP's computed once and read back on every rerun."""
from __future__ import annotations

import pytest

from core.encoders.clip import encoder_status, load_encoder
from core.paths import DEFAULT_MODEL
from core.scoring import clip_cam

from .test_dashboard import _app, _ok, _png, _texts, _upload


@pytest.mark.slow
def test_inspect_names_the_parts_and_shows_clips_map_once(tmp_path, monkeypatch):
    if load_encoder() is None:
        pytest.skip(encoder_status())
    monkeypatch.setenv("LADEDA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LADEDA_MODEL", str(DEFAULT_MODEL))
    calls = {"n": 0}
    real = clip_cam.compute

    def counted(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(clip_cam, "compute", counted)
    at = _ok(_app().run())
    _upload(at, "photo.png", _png(3))
    text = _texts(at)
    assert "Who decided:" in text and "CLIP second opinion:" in text and "% of the evidence" in text
    assert "LaDeDa local traces (" in text and "of this verdict's evidence" in text
    assert calls["n"] == 0  # CLIP's map is not on the verdict's critical path
    at.segmented_control(key="inspect-view").set_value("CLIP GradCAM")
    _ok(at.run())
    text = _texts(at)
    assert "CLIP GradCAM overlay" in text and "where the CLIP second opinion found evidence" in text
    assert "CLIP saw" in text and calls["n"] == 1
    at.segmented_control(key="inspect-view").set_value("Plain")
    _ok(at.run())
    at.segmented_control(key="inspect-view").set_value("CLIP GradCAM")
    _ok(at.run())
    assert "CLIP GradCAM overlay" in _texts(at) and calls["n"] == 1  # read back, never recomputed

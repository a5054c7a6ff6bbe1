"""The CLIP encoder: its own preprocessing spec, and LaDeDa-only scoring with a stated reason when it is absent."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.encoders.clip import CLIP_MEAN, ClipSpec, encoder_status, load_encoder
from core.paths import DEFAULT_TINY_MODEL
from core.scoring.analysis import analyse
from core.scoring.detector import Detector


def _png(w: int, h: int) -> bytes:
    arr = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_spec_is_shortest_side_centre_crop_with_clip_normalisation():
    spec = ClipSpec()
    x = spec.to_tensor(Image.new("RGB", (300, 200), tuple(int(round(m * 255)) for m in CLIP_MEAN)))
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
    assert np.abs(x).max() < 0.02  # the CLIP mean colour normalises to ~0
    assert spec.fingerprint() == ClipSpec().fingerprint() != ClipSpec(size=256).fingerprint()
    assert "bicubic" in spec.summary() and "centre crop" in spec.summary()


def test_missing_encoder_means_ladeda_only_with_a_reason(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "clip.onnx"
    monkeypatch.setenv("LADEDA_ENCODER", str(missing))
    assert load_encoder() is None
    assert "not installed" in encoder_status() and "LaDeDa alone" in encoder_status()
    det = Detector.load(DEFAULT_TINY_MODEL, fast=False)
    out = analyse(det, _png(96, 80), guardrails=False).to_json()
    assert out["components"]["clip"] is None
    assert out["components"]["used"] == "ladeda" and "not installed" in out["components"]["clip_note"]
    assert out["logit"] == out["components"]["ladeda"]["logit"] == out["components"]["fused"]["logit"]
    assert any("LaDeDa alone" in r for r in out["reasons"])


def test_a_file_with_the_wrong_hash_is_refused(tmp_path):
    bad = tmp_path / "clip.onnx"
    bad.write_bytes(b"not an onnx model")
    assert load_encoder(bad) is None
    assert "not the expected CLIP encoder" in encoder_status(bad)


def test_installed_encoder_gives_unit_embeddings_deterministically():
    enc = load_encoder()
    if enc is None:
        pytest.skip(encoder_status())
    img = Image.open(io.BytesIO(_png(320, 240)))
    a, b = enc.encode(img), enc.encode(img)
    assert a.embedding.shape == (512,) and a.cls.shape == (768,) and a.layers.shape == (12, 768)
    # the last block's CLS token is the file's own final CLS output; the earlier blocks differ from it
    np.testing.assert_array_equal(a.layers[-1], a.cls)
    assert all(np.abs(a.layers[i] - a.cls).max() > 1e-3 for i in range(11))
    assert abs(float(np.linalg.norm(a.embedding)) - 1.0) < 1e-5
    np.testing.assert_array_equal(a.embedding, b.embedding)

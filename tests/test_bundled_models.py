"""The shipped checkpoints: load, carry their spec/calibration/tiers/provenance, score real images."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.model.checkpoint import load_checkpoint
from core.scoring.detector import Detector
from core.paths import DEFAULT_MODEL, DEFAULT_TINY_MODEL, default_model_path

from .conftest import PARITY, encode, make_photo

#: The shipped models scored end to end: part of the full suite, not the quick subset.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("path,label,dtype", [(DEFAULT_MODEL, "LaDeDa9", torch.float16),
                                              (DEFAULT_TINY_MODEL, "Tiny-LaDeDa", torch.float32)])
def test_bundled_checkpoint_is_complete(path, label, dtype):
    ckpt = load_checkpoint(path)
    assert ckpt.label == label
    assert all(v.dtype == dtype for v in ckpt.state_dict.values() if v.is_floating_point())
    assert ckpt.calibration and ckpt.calibration["method"] in ("temperature", "platt", "isotonic")
    assert ckpt.tiers and 0 < ckpt.tiers["real_below"] <= ckpt.tiers["fake_at_or_above"] < 1
    assert ckpt.tiers["calibration_version"] == ckpt.calibration_version
    prov = ckpt.provenance
    assert len(prov["training_data_manifest_sha256"]) == 64 and prov["created_at"]
    # serving reads the spec the model was trained with (the Tiny inherits its teacher's)
    cfg = prov.get("training_config") or load_checkpoint(DEFAULT_MODEL).provenance["training_config"]
    assert ckpt.spec.resize_mode == cfg["resize_mode"] and ckpt.spec.input_representation in ("NPR", "right_diag")
    assert ckpt.spec.max_side == cfg["max_side"] and ckpt.spec.size == (cfg["size"], cfg["size"])


def test_default_model_is_the_bundled_ladeda9(monkeypatch):
    monkeypatch.delenv("LADEDA_MODEL", raising=False)
    assert default_model_path() == DEFAULT_MODEL


@pytest.mark.parametrize("path", [DEFAULT_MODEL, DEFAULT_TINY_MODEL])
def test_bundled_models_score_images(path):
    det = Detector.load(path)
    names = ["china.jpg", "flower.jpg", "grace_hopper.jpg"]
    sources = [PARITY / "images" / n for n in names] if (PARITY / "images").exists() else [encode(make_photo(), "PNG")]
    for src in sources:
        r = det.score(src)
        assert r.calibrated and 0.0 <= r.probability <= 1.0 and np.isfinite(r.logit)
        assert r.logit == pytest.approx(float(r.patch_logits.astype(np.float64).mean()), abs=1e-6)


def test_bundled_model_sends_a_thumbnail_to_review():
    # The bundled models serve native resolution, so nothing is upscaled; a 64-px thumbnail
    # (the corpus's stress group, which the model calls fake with high confidence) must
    # still never get a clear verdict.
    from core.scoring.analysis import analyse

    a = analyse(Detector.load(DEFAULT_MODEL), encode(make_photo(64, 64), "JPEG", quality=95))
    assert a.score.image["model_input"] == [64, 64]
    assert a.guardrails.quality.too_small and a.decision.tier == "review"
    assert any("tiny image (64×64" in r for r in a.decision.reasons)

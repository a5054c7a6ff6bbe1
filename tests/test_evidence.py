"""Stored evidence and the explanations drawn from it: what Review shows without a model pass."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.paths import DEFAULT_MODEL
from core.review import evidence as evidence_mod
from core.review.actions import submit as submit_mod
from core.review.store import ReviewStore
from core.scoring import explain
from core.scoring.detector import Detector

from .conftest import encode, make_photo


@pytest.fixture(scope="module")
def det():
    return Detector.load(DEFAULT_MODEL, fast=False)


def test_evidence_round_trips_compactly_through_the_artifact_store(det, tmp_path):
    store = ReviewStore(tmp_path / "review.sqlite")
    sub = submit_mod.submit(det, encode(make_photo(320, 240, seed=1), "PNG"), "r.png", store, "ana")
    ev = sub.evidence
    back = evidence_mod.load(store, sub.sha256, ev.model_key)
    assert back is not None and back.complete
    path = store.artifacts._path(sub.sha256, ev.model_key, evidence_mod.KIND)
    assert path.stat().st_size < ev.patch_logits.size * 2 + 8192  # float16, compressed, plus the JSON facts
    np.testing.assert_allclose(back.patch_logits, ev.patch_logits, rtol=1e-3, atol=1e-2)
    assert back.top_patches == ev.top_patches and back.decision == ev.decision
    assert back.guardrails == ev.guardrails and back.poolings == ev.poolings
    assert back.logit == ev.logit and back.probability == ev.probability
    assert back.image_size == (320, 240) and back.model_input_hw == ev.model_input_hw
    assert set(back.timings_ms) >= {"decode", "preprocess", "forward"}
    # the mean of the stored map is still LaDeDa's image logit (to float16 precision); with the CLIP
    # encoder installed the served logit is the fusion, and LaDeDa's own is its component
    ladeda = ((back.extra.get("components") or {}).get("ladeda") or {}).get("logit", ev.logit)
    assert abs(float(back.patch_logits.mean()) - ladeda) < 1e-2


@pytest.mark.parametrize("target", ["fake", "real"])
def test_gradcam_at_the_default_layer_is_rendered_exactly_from_the_patch_map(det, target):
    decoded = det.decode(encode(make_photo(192, 160, seed=2), "PNG"))
    prepared = det.prepare(decoded)
    res = explain.gradcam_for_detector(det, decoded, prepared=prepared, target=target)
    patch = det.patch_map(prepared.tensor)[0]
    bias = float(det.model.fc.bias.detach().reshape(-1)[0])
    grid = explain.gradcam_grid_from_patch_map(patch, bias, target)
    cam, covered = explain.patch_map_to_pixels(grid, det.geometry, prepared.tensor.shape[-2:],
                                               res.overlay.size, mode="bilinear")
    cam = np.clip(np.where(covered, cam, 0.0), 0, 1)
    assert np.abs(cam - res.cam).max() < 0.02
    overlay = explain.cam_overlay(decoded.image, grid, det.geometry, prepared.tensor.shape[-2:])
    assert overlay.size == res.overlay.size


def test_the_coarse_heatmap_keeps_the_image_logit():
    rng = np.random.default_rng(0)
    pm = rng.normal(0, 1, (37, 53)).astype(np.float32)  # edges with partial blocks
    coarse = explain.coarsen(pm, 4)
    assert coarse.shape == pm.shape
    assert abs(float(coarse.astype(np.float64).mean()) - float(pm.astype(np.float64).mean())) < 1e-5
    assert np.allclose(coarse[:4, :4], pm[:4, :4].mean())
    assert np.allclose(coarse[36:, 52:], pm[36:, 52:].mean())
    with pytest.raises(ValueError):
        explain.coarsen(pm, 0)


def test_numbered_patches_are_drawn_where_the_boxes_are():
    img = Image.new("RGB", (2000, 1000), (128, 128, 128))
    out = explain.draw_numbered(img, [(100, 100, 109, 109), (1500, 800, 1509, 809)], source_size=img.size)
    assert max(out.size) == explain.DEFAULT_MAX_SIDE
    arr = np.asarray(out).astype(int)
    sx = out.width / 2000
    cx, cy = round(104.5 * sx), round(104.5 * sx)
    around = arr[max(0, cy - 10):cy + 10, max(0, cx - 10):cx + 10]
    assert (np.abs(around - 128).sum(axis=-1) > 60).any()  # a mark at patch 1
    assert (np.abs(arr[:40, 900:] - 128).sum(axis=-1) < 5).all()  # nothing drawn far from the patches

"""CLIP GradCAM: its geometry on the original image, the deletion test's masks, and the stored map."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from core.encoders.clip import ClipSpec
from core.paths import DEFAULT_MODEL
from core.scoring import clip_cam, faithfulness as F

from .conftest import REPO, encode, make_photo


def test_crop_box_is_the_area_the_spec_feeds_to_clip():
    spec = ClipSpec()
    assert spec.crop_box(224, 224) == (0.0, 0.0, 224.0, 224.0)
    x0, y0, x1, y1 = spec.crop_box(300, 200)  # landscape: the centre 200×200
    assert (round(x0), y0, round(x1), round(y1)) == (50, 0.0, 250, 200)
    # what CLIP is fed is that box: a picture that is grey inside it and red outside gives a grey input
    img = Image.new("RGB", (300, 200), (255, 0, 0))
    img.paste(Image.new("RGB", (200, 200), (128, 128, 128)), (50, 0))
    x = spec.to_tensor(img)[0]
    assert np.ptp(x[:, 2:-2, 2:-2], axis=(1, 2)).max() < 1e-5


def test_token_grid_is_placed_on_the_crop_and_nothing_outside_is_seen():
    grid = np.zeros((14, 14), np.float32)
    grid[0, 0] = 1.0  # the top-left token
    values, seen = clip_cam.cam_to_pixels(grid, (50.0, 0.0, 250.0, 200.0), (300, 200), (150, 100))
    assert values.shape == seen.shape == (100, 150)
    assert not seen[:, :25].any() and not seen[:, 125:].any() and seen[:, 25:125].all()
    assert values[~seen].max() == 0.0 and 0.0 <= values.min() and values.max() <= 1.0
    y, x = np.unravel_index(np.argmax(values), values.shape)
    assert 25 <= x < 25 + 100 / 14 + 1 and y < 100 / 14 + 1  # the hot token is the crop's top-left cell


def test_deletion_masks_have_the_same_area_inside_the_field_of_view():
    rng = np.random.default_rng(0)
    values = rng.random((60, 90))
    allowed = np.zeros((60, 90), bool)
    allowed[:, 15:75] = True
    top = F.top_area_mask(values, allowed)
    assert top.sum() == round(0.1 * 60 * 90) and not top[~allowed].any()
    assert values[top].min() >= values[allowed & ~top].max()
    masks = F.random_masks((60, 90), allowed, rng)
    assert len(masks) == F.RANDOM_MASKS
    assert all(m.sum() == top.sum() and not m[~allowed].any() for m in masks)
    assert not np.array_equal(masks[0], masks[1])
    # the drop is toward the other class: down for a fake call, up for a real one
    assert F.drop(2.0, 0.5) == 1.5 and F.drop(-2.0, -0.5) == 1.5 and F.drop(-2.0, -3.0) == -1.0


def test_caption_says_when_a_map_does_not_beat_random():
    rec = {"n": 10, "data": "images", "parts": {
        "clip_gradcam": {"wins": 8, "mean_drop": 0.9, "mean_random_drop": 0.2},
        "ladeda_patch": {"wins": 3, "mean_drop": 0.1, "mean_random_drop": 0.2}}}
    assert "beat random areas on 8 of 10" in F.caption_note("clip_gradcam", rec)
    assert "does not beat random deletion" in F.caption_note("ladeda_patch", rec)
    assert F.caption_note("clip_gradcam", {"n": 0, "parts": {}}) is None
    rec["parts"]["clip_gradcam"].update(mean_drop=-0.2, mean_random_drop=-0.9)  # better than random, still not down
    assert "did not, on average, weaken the part's call" in F.caption_note("clip_gradcam", rec)


@pytest.mark.slow
def test_gradcam_on_the_clip_head_is_stored_once_and_never_shown_under_another_verdict(encoder, tmp_path):
    from core.review import clip_maps
    from core.review.actions import submit as submit_mod
    from core.review.store import ReviewStore
    from core.scoring.detector import Detector

    det = Detector.load(DEFAULT_MODEL, fast=False)
    photo = make_photo(320, 240, seed=7)
    with ReviewStore(tmp_path / "review.sqlite") as store:
        sub = submit_mod.submit(det, encode(photo), "p.png", store, "ana")
        ev = sub.evidence
        assert (ev.extra["components"] or {}).get("clip") is not None
        assert clip_maps.clip_map(det, store, ev, photo, compute=False).cam is None  # not computed yet
        first = clip_maps.clip_map(det, store, ev, photo)
        cam = first.cam
        assert first.computed and cam is not None and cam.grid.shape == (14, 14)
        assert cam.grid.min() >= 0.0 and cam.grid.max() == pytest.approx(1.0, abs=1e-3)
        assert cam.target == ("fake" if cam.clip_logit >= 0 else "real")
        assert cam.crop_box == pytest.approx(ClipSpec().crop_box(320, 240)) and "centre crop" in cam.describe_area()
        assert cam.layer == clip_cam.DEFAULT_LAYER and cam.key.startswith(encoder.key)
        again = clip_maps.clip_map(det, store, ev, photo)  # a page rerun: read back, not recomputed
        assert not again.computed and np.allclose(again.cam.grid, cam.grid, atol=1e-3)
        # a verdict made by another checkpoint (another head) gets no map, and says why
        other = clip_maps.clip_map(det, store, dataclasses.replace(ev, model_sha256="0" * 64), photo)
        assert other.cam is None and "another model" in other.note
        overlay = clip_cam.cam_overlay(photo, cam)
        assert overlay.size == photo.size
        # the evidence report shows both maps, named for their parts, and each part's share
        from core.review.report import build_report

        doc = build_report(store, ev.sha256, det, probe=False, analysis=sub.analysis).html
        assert 'alt="CLIP GradCAM"' in doc and 'alt="LaDeDa local traces"' in doc
        assert "Who decided: CLIP second opinion" in doc or "Who decided: LaDeDa local traces" in doc


@pytest.mark.slow
def test_faithfulness_benchmark_prints_the_agreed_json(encoder, tmp_path):
    folder = tmp_path / "src" / "test" / "1_fake"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes(encode(make_photo(160, 128, seed=9), "JPEG", quality=92))
    (tmp_path / "src" / "train").mkdir()
    (tmp_path / "src" / "train" / "b.jpg").write_bytes(encode(make_photo(160, 128, seed=10), "JPEG"))
    # one image: 12 CLIP and 12 LaDeDa passes and one GradCAM (about 1-2 min on 2 free cores)
    proc = subprocess.run([sys.executable, "benchmarks/explain_faithfulness.py", "--data", str(tmp_path / "src"),
                           "--n", "1", "--json"], cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out) == {"n", "parts"} and out["n"] == 1  # only the test folder's image
    assert set(out["parts"]) == {"clip_gradcam", "ladeda_patch"}
    for part in out["parts"].values():
        assert set(part) == {"wins", "mean_drop", "mean_random_drop"} and part["wins"] in (0, 1)

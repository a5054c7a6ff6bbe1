"""core.scoring.explain: fixed-scale heatmap, GradCAM through pytorch-grad-cam, crops and boxes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from core.model.checkpoint import Checkpoint
from core.scoring.detector import Detector, PatchHit
from core.scoring.explain import (
    DEFAULT_LOGIT_LIMIT,
    LabelledBox,
    colour_legend,
    diverging_colours,
    draw_boxes,
    gradcam,
    gradcam_for_detector,
    gradcam_network,
    heatmap_for_score,
    heatmap_overlay,
    patch_map_to_pixels,
    target_layer,
    top_patch_crops,
)
from core.model.models import PatchGeometry, arch_record, build_model
from core.model.preprocess import PreprocessSpec, official_spec

from .conftest import make_photo


def _random_checkpoint(tmp_path_factory, arch: str, spec: PreprocessSpec, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(arch, spec.input_representation)
    # non-trivial BN statistics so patch logits vary in sign
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    ckpt = Checkpoint(arch=arch_record(arch), spec=spec, state_dict=model.state_dict(),
                      provenance={"source": "test-random"})
    path = tmp_path_factory.mktemp("explain") / f"{arch}.pt"
    ckpt.save(path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Detector:
    return Detector.load(_random_checkpoint(tmp_path_factory, "tiny", official_spec("right_diag")), fast=False)


@pytest.fixture(scope="module")
def ladeda_small(tmp_path_factory) -> Detector:
    """LaDeDa9 at 64×64 input: the real architecture, fast enough for a unit test."""
    spec = PreprocessSpec(input_representation="NPR", size=(64, 64))
    return Detector.load(_random_checkpoint(tmp_path_factory, "ladeda9", spec, seed=1), fast=False)


# -- colour scale --------------------------------------------------------------
def test_colour_scale_is_fixed_symmetric_and_clipped():
    c = diverging_colours(np.array([-DEFAULT_LOGIT_LIMIT, 0.0, DEFAULT_LOGIT_LIMIT, 5 * DEFAULT_LOGIT_LIMIT, -99]))
    neg, zero, pos, beyond, very_neg = (tuple(int(v) for v in row) for row in c)
    assert zero == (247, 247, 247)
    assert neg[2] > neg[0] and pos[0] > pos[2]  # blue = real, red = fake
    assert beyond == pos and very_neg == neg  # clipped at ±limit
    # the colour of a value does not depend on the other values in the map
    a = diverging_colours(np.array([1.5, 0.0, 0.2]))[0]
    b = diverging_colours(np.array([1.5, -40.0, 40.0]))[0]
    assert np.array_equal(a, b)


def test_colour_legend_has_requested_size():
    legend = colour_legend(8.0, width=300, height=50)
    assert legend.size == (300, 50)
    with pytest.raises(ValueError):
        diverging_colours(np.zeros(3), limit=0)


# -- patch grid → pixels -------------------------------------------------------
def test_patch_map_to_pixels_follows_geometry_and_scale():
    geo = PatchGeometry(size=9, stride=8, offset=0)  # LaDeDa9 + NPR
    pm = np.arange(31 * 31, dtype=np.float32).reshape(31, 31)
    values, covered = patch_map_to_pixels(pm, geo, (256, 256), (256, 256))
    assert values.shape == (256, 256) and covered.shape == (256, 256)
    assert values[4, 4] == pm[0, 0]
    assert values[4 + 8 * 3, 4 + 8 * 5] == pm[3, 5]
    assert covered[247, 247] and not covered[250, 100]  # last patch ends at 248
    # an image twice the model-input size maps the same patch at twice the coordinates
    v2, c2 = patch_map_to_pixels(pm, geo, (256, 256), (512, 512))
    assert v2[2 * (4 + 8 * 3), 2 * (4 + 8 * 5)] == pm[3, 5]
    assert not c2[505, 10]
    # non-square original (stretch resize): x and y scale independently
    v3, _ = patch_map_to_pixels(pm, geo, (256, 256), (1024, 256))
    assert v3[4 + 8 * 2, 4 * (4 + 8 * 7)] == pm[2, 7]
    vb, _ = patch_map_to_pixels(pm, geo, (256, 256), (256, 256), mode="bilinear")
    assert vb[4, 4] == pytest.approx(pm[0, 0]) and vb[8, 4] == pytest.approx((pm[0, 0] + pm[1, 0]) / 2)


def test_heatmap_overlay_uses_the_same_colours_on_every_image():
    geo = PatchGeometry(size=9, stride=8, offset=0)
    grey = Image.new("RGB", (256, 256), (128, 128, 128))
    pm_a = np.zeros((31, 31), np.float32)
    pm_a[0, 0] = 3.0
    pm_b = np.full((31, 31), -20.0, np.float32)  # a very different range
    pm_b[0, 0] = 3.0
    pm_b[1, 1] = 50.0
    a = np.asarray(heatmap_overlay(grey, pm_a, geo, (256, 256), opacity=1.0))
    b = np.asarray(heatmap_overlay(grey, pm_b, geo, (256, 256), opacity=1.0))
    assert np.array_equal(a[4, 4], b[4, 4])  # logit 3 is one colour, whatever else is in the map
    assert np.array_equal(a[4, 4], diverging_colours(np.array([3.0]))[0])
    assert np.array_equal(a[252, 252], [128, 128, 128])  # uncovered margin untinted
    none = np.asarray(heatmap_overlay(grey, pm_b, geo, (256, 256), opacity=0.0))
    assert np.array_equal(none, np.asarray(grey))
    with pytest.raises(ValueError):
        heatmap_overlay(grey, pm_a, geo, (256, 256), opacity=1.5)


def test_heatmap_for_score_on_a_real_detector(tiny):
    img = make_photo(400, 300)
    score = tiny.score(img_bytes(img))
    overlay = heatmap_for_score(img, score, tiny.geometry, max_side=200)
    assert overlay.size == (200, 150)
    full = heatmap_for_score(img, score, tiny.geometry, max_side=None, opacity=0.4)
    assert full.size == img.size


# -- GradCAM -------------------------------------------------------------------
def _expected_last_layer_cam(detector: Detector, patch_logits: np.ndarray, sign: float) -> np.ndarray:
    """At the last feature layer GradCAM = ReLU(±(patch_logit − fc.bias)), min-max normalised."""
    bias = float(detector.model.fc.bias.detach()[0])
    grid = np.maximum(sign * (patch_logits.astype(np.float64) - bias), 0)
    grid = (grid - grid.min()) / (grid.max() - grid.min() + 1e-7)
    return grid


@pytest.mark.parametrize("target,sign", [("fake", 1.0), ("real", -1.0)])
def test_gradcam_matches_the_patch_logits_at_the_last_layer(tiny, target, sign):
    img = make_photo(256, 256, seed=3)
    decoded = tiny.decode(img_bytes(img))
    score = tiny.score(decoded)
    res = gradcam_for_detector(tiny, decoded, target=target, max_side=None)
    assert res.target == target and res.layer == "layer1"
    assert res.image_logit == pytest.approx(score.logit, abs=1e-3)
    assert res.cam.shape == (256, 256) and res.overlay.size == (256, 256)
    assert 0.0 <= res.cam.min() and res.cam.max() <= 1.0
    expected = _expected_last_layer_cam(tiny, score.patch_logits, sign)
    exp_px, covered = patch_map_to_pixels(expected, tiny.geometry, (256, 256), (256, 256), mode="bilinear")
    assert np.abs(res.cam[covered] - exp_px[covered]).max() < 2e-3


def test_gradcam_auto_targets_the_predicted_class_and_leaves_the_model_alone(tiny):
    img = make_photo(300, 200, seed=5)
    decoded = tiny.decode(img_bytes(img))
    score = tiny.score(decoded)
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    res = gradcam_for_detector(tiny, decoded)
    assert res.target == ("fake" if score.logit >= 0 else "real")
    assert res.overlay.size == img.size
    after = tiny.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in tiny.model.parameters())
    assert torch.is_grad_enabled()


def test_gradcam_on_ladeda9(ladeda_small):
    det = ladeda_small
    img = make_photo(128, 96, seed=7)
    decoded = det.decode(img_bytes(img))
    score = det.score(decoded)
    name, _ = target_layer(det.model)
    assert name == "layer4.2"
    res = gradcam_for_detector(det, decoded, target="fake", max_side=None)
    assert res.image_logit == pytest.approx(score.logit, abs=1e-3)
    expected = _expected_last_layer_cam(det, score.patch_logits, 1.0)
    exp_px, covered = patch_map_to_pixels(expected, det.geometry, (64, 64), img.size, mode="bilinear")
    assert np.abs(res.cam[covered] - exp_px[covered]).max() < 2e-3
    # the folded GradCAM network is an exact copy, made once
    assert gradcam_network(det.model) is gradcam_network(det.model)
    # an earlier layer (a different grid) still gives an image-sized map
    tensor = det.prepare(decoded).tensor
    early = gradcam(det.model, tensor, decoded.image, target="fake", layer="layer1", max_side=None)
    assert early.cam.shape == (96, 128) and early.layer == "layer1"
    with pytest.raises(ValueError):
        target_layer(det.model, "layer9")


# -- crops and boxes -----------------------------------------------------------
def test_top_patch_crops_are_enlarged_and_outlined():
    img = make_photo(320, 240)
    hits = [PatchHit(row=0, col=0, logit=4.2, box=(0, 0, 9, 9)),
            PatchHit(row=5, col=7, logit=3.1, box=(100, 60, 118, 78))]
    crops = top_patch_crops(img, hits, size=160, context=1.0)
    assert [c.rank for c in crops] == [1, 2]
    assert crops[0].context_box == (0, 0, 18, 18)
    assert crops[1].context_box == (82, 42, 136, 96)
    assert max(crops[1].image.size) == 160
    assert crops[0].logit == pytest.approx(4.2)
    # the patch outline is drawn in red inside the enlarged crop
    arr = np.asarray(crops[1].image)
    assert (arr[:, :, 0] > 200).any() and ((arr[:, :, 1] < 60) & (arr[:, :, 0] > 200)).any()


def test_draw_boxes_scales_to_display():
    img = Image.new("RGB", (2000, 1000), (255, 255, 255))
    out = draw_boxes(img, [LabelledBox((100, 100, 600, 400), "face 0.91", (0, 200, 0))], max_side=1000)
    assert out.size == (1000, 500)
    arr = np.asarray(out)
    assert tuple(arr[100, 50]) == (0, 200, 0)  # left edge of the box at half scale
    assert img.getpixel((50, 50)) == (255, 255, 255)  # original untouched


def img_bytes(img: Image.Image) -> bytes:
    from .conftest import encode

    return encode(img, "PNG")


def test_warm_up_runs_on_both_architectures(tiny, ladeda_small):
    from core.scoring.explain import warm_up

    warm_up(tiny.model)
    warm_up(ladeda_small.model, size=32)
    assert gradcam_network(tiny.model) is gradcam_network(tiny.model)

"""Architecture facts: map shapes, non-square inputs, representations, serving equivalence."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.model.models import LaDeDa, TinyLaDeDa, arch_record, build_model
from core.model.representations import REPRESENTATIONS, npr
from core.model.serving import ServingModel, fold_for_inference


def _randomise_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def ladeda9():
    torch.manual_seed(0)
    return _randomise_bn(LaDeDa(9, "NPR"))


def test_non_square_input_gives_31x39_map_whose_mean_is_the_image_logit(ladeda9):
    x = torch.randn(1, 3, 256, 320)
    with torch.inference_mode():
        patch = ladeda9(x)
        pooled = ladeda9.fc(ladeda9.features(x).mean(dim=(2, 3)))  # official avg-pool head
    assert tuple(patch.shape) == (1, 1, 31, 39)
    assert patch.mean().item() == pytest.approx(pooled.item(), rel=1e-5, abs=1e-4)


@pytest.mark.parametrize("rf,expected", [(5, 32), (9, 31), (17, 30), (33, 28)])
def test_receptive_field_variants_build_and_run(rf, expected):
    m = LaDeDa(rf, "NPR").eval()
    with torch.inference_mode():
        assert m(torch.randn(1, 3, 256, 256)).shape[-1] == expected
    assert m.patch_geometry.size == rf and m.patch_geometry.stride == 8


def test_receptive_field_is_exactly_9_pixels(ladeda9):
    """Changing one pixel only moves the patches whose 9x9 window contains it."""
    x = torch.randn(1, 3, 96, 96)
    y = x.clone()
    y[..., 50, 41] += 5.0
    with torch.inference_mode():
        d = (ladeda9(y) - ladeda9(x)).abs()[0, 0] > 1e-6
    rows, cols = np.nonzero(d.numpy())
    g = ladeda9.patch_geometry
    for r, c in zip(rows, cols):
        x0, y0, x1, y1 = g.box(int(r), int(c), 96, 96)
        assert x0 <= 41 < x1 and y0 <= 50 < y1
    assert len(rows) >= 1


def test_tiny_map_shape_and_geometry():
    m = TinyLaDeDa("right_diag").eval()
    with torch.inference_mode():
        assert tuple(m(torch.randn(2, 3, 256, 256)).shape) == (2, 1, 126, 126)
    assert m.patch_geometry.size == 9 and m.patch_geometry.offset == -1


@pytest.mark.parametrize("name", sorted(REPRESENTATIONS))
def test_every_input_representation_keeps_size(name):
    x = torch.randn(1, 3, 33, 40)
    assert REPRESENTATIONS[name](x).shape == x.shape
    m = build_model(arch_record("tiny"), name).eval()
    with torch.inference_mode():
        assert m(torch.randn(1, 3, 64, 64)).shape[-2:] == (30, 30)


def test_npr_matches_official_definition_on_even_sizes():
    x = torch.randn(2, 3, 64, 48)
    official = x - torch.nn.functional.interpolate(
        torch.nn.functional.interpolate(x, scale_factor=0.5, mode="nearest", recompute_scale_factor=True),
        scale_factor=2, mode="nearest", recompute_scale_factor=True)
    assert torch.equal(npr(x), official)
    assert npr(torch.randn(1, 3, 33, 35)).shape == (1, 3, 33, 35)


@pytest.mark.parametrize("hw", [(256, 256), (256, 320), (201, 199), (64, 64)])
def test_serving_path_matches_eager(ladeda9, hw):
    """Random weights give logits near -1000, so the bound is relative here; the
    1e-3 absolute bound on realistic logits is checked in test_parity."""
    x = torch.randn(1, 3, *hw)
    with torch.inference_mode():
        ref = ladeda9(x)
        folded = fold_for_inference(ladeda9)(x)
    bound = 1e-5 * ref.abs().max().item()
    assert (folded - ref).abs().max().item() < bound
    fast = ServingModel(ladeda9, warmup=2)(x)
    assert fast.shape == ref.shape
    assert (fast - ref).abs().max().item() < bound


def test_tiny_serving_matches_eager():
    m = _randomise_bn(TinyLaDeDa("right_diag"))
    x = torch.randn(3, 3, 128, 96)
    with torch.inference_mode():
        ref = m(x)
    assert (ServingModel(m, warmup=2)(x) - ref).abs().max().item() < 1e-4


def test_unknown_arch_and_rf_are_refused():
    with pytest.raises(ValueError):
        arch_record("ladeda7")
    with pytest.raises(ValueError):
        arch_record("vgg")

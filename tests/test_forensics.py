"""Forensic views on generated images: a spliced-in region stands out under ELA (and not
because of its texture), the model-input view is the representation the model reads, and
every layer says what it shows and how it misleads."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.errors import InvalidArgumentError
from core.model.preprocess import official_spec
from core.scoring.forensics import LAYER_KEYS, error_level, forensic_layers, layer, model_input_view, noise_residual

from .conftest import encode, make_photo

BOX = (120, 80, 200, 160)  # x0, y0, x1, y1 of the spliced region


def _resaved(img: Image.Image, quality: int) -> Image.Image:
    return Image.open(io.BytesIO(encode(img, "JPEG", quality=quality))).convert("RGB")


def _inside_outside(values: np.ndarray, box=BOX) -> tuple[float, float]:
    x0, y0, x1, y1 = box
    mask = np.zeros(values.shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return float(values[mask].mean()), float(values[~mask].mean())


@pytest.fixture(scope="module")
def spliced() -> Image.Image:
    """A generated photo saved twice as JPEG q90, with a never-compressed patch of the same kind of texture."""
    base = np.array(_resaved(_resaved(make_photo(320, 240, seed=1), 90), 90))
    donor = np.array(make_photo(320, 240, seed=7))
    x0, y0, x1, y1 = BOX
    base[y0:y1, x0:x1] = donor[y0:y1, x0:x1]
    return Image.fromarray(base, "RGB")


def test_ela_makes_a_spliced_region_stand_out(spliced):
    ela = error_level(spliced)
    inside, outside = _inside_outside(ela.values)
    assert inside > 10 * outside, (inside, outside)
    shown = np.asarray(ela.image, dtype=np.float64).mean(axis=2)  # and it is visible in the drawn layer
    shown_in, shown_out = _inside_outside(shown)
    assert shown_in > 5 * shown_out
    assert ela.params == {"quality": 90, "scale": 15.0} and "quality 90" in ela.shows


def test_ela_without_a_splice_has_no_region_standing_out(spliced):
    whole = _resaved(_resaved(make_photo(320, 240, seed=1), 90), 90)
    inside, outside = _inside_outside(error_level(whole).values)
    spliced_inside, _ = _inside_outside(error_level(spliced).values)
    assert max(inside, outside) < 0.05 * spliced_inside  # the same box, untouched, is as dark as the rest


def test_the_splice_is_compression_history_not_texture(spliced):
    # the noise residual sees similar grain inside and outside: ELA's contrast is the re-save history
    inside, outside = _inside_outside(noise_residual(spliced).values)
    assert inside < 2 * outside


def test_model_input_view_is_the_representation_the_model_reads():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    upsampled = Image.fromarray(small, "RGB").resize((256, 256), Image.Resampling.NEAREST)
    npr = model_input_view(upsampled, official_spec("NPR"))
    # NPR is zero on a nearest ×2 upsampling (already at the model's 256×256 input, so not resized again)
    assert float(np.abs(npr.values).max()) == 0.0
    photo = model_input_view(make_photo(320, 240, seed=2), official_spec("NPR"))
    assert float(photo.values.mean()) > 0.01
    assert photo.params["model_input"] == [256, 256] and photo.image.size == (320, 240)
    assert "NPR" in photo.title and "resize to 256x256" in photo.shows
    diag = model_input_view(make_photo(320, 240, seed=2), official_spec("right_diag"))
    assert "right-diagonal" in diag.shows and float(diag.values.mean()) > 0.01


def test_every_layer_says_what_it_shows_and_how_it_misleads(spliced):
    layers = forensic_layers(spliced, official_spec("NPR"))
    assert [x.key for x in layers] == list(LAYER_KEYS)
    for x in layers:
        assert x.image.mode == "RGB" and x.image.size == spliced.size
        assert x.shows.endswith(".") and x.misleads.endswith(".") and x.shows != x.misleads
        assert set(x.to_json()) >= {"key", "title", "shows", "misleads", "params"}
    assert len({x.misleads for x in layers}) == 3


def test_large_images_are_drawn_at_display_size_and_unknown_layers_refused():
    big = make_photo(1600, 1200, seed=3)
    assert max(layer("noise", big, official_spec("NPR")).image.size) == 1024
    with pytest.raises(InvalidArgumentError, match="Unknown forensic layer"):
        layer("ghosts", big, official_spec("NPR"))
    with pytest.raises(InvalidArgumentError, match="between 1 and 100"):
        error_level(big, quality=0)

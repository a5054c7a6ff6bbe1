"""Guardrails on generated images and on real faces from the shared corpus."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image, ImageFilter
from PIL.PngImagePlugin import PngInfo

from core.detector import Detector
from core.guardrails import run_guardrails
from core.guardrails.quality import BLUR_THRESHOLD, blur_value, estimate_jpeg_quality
from core.imageio import decode_image

from .conftest import CORPUS, encode, make_photo


def _sharp() -> Image.Image:
    rng = np.random.default_rng(0)
    checks = (np.indices((384, 512)).sum(axis=0) // 8 % 2 * 180 + rng.integers(0, 60, (384, 512))).astype(np.uint8)
    return Image.fromarray(checks).convert("RGB")


def test_blurred_vs_sharp():
    sharp = _sharp()
    blurred = sharp.filter(ImageFilter.GaussianBlur(6))
    assert blur_value(sharp) > BLUR_THRESHOLD > blur_value(blurred)
    assert run_guardrails(decode_image(encode(blurred, "PNG"))).quality.blurry
    assert not run_guardrails(decode_image(encode(sharp, "PNG"))).quality.blurry


@pytest.mark.parametrize("quality", [10, 95])
def test_jpeg_quality_estimate_within_5(quality):
    data = encode(make_photo(320, 240), "JPEG", quality=quality)
    assert abs(estimate_jpeg_quality(Image.open(io.BytesIO(data))) - quality) <= 5
    report = run_guardrails(decode_image(data))
    assert abs(report.to_json()["jpeg_quality"] - quality) <= 5
    assert report.quality.low_jpeg_quality == (quality < 40)


def test_png_is_not_a_jpeg():
    assert run_guardrails(decode_image(encode(make_photo(), "PNG"))).to_json()["jpeg_quality"] is None


def test_64x64_image_is_flagged_as_upscaled():
    report = run_guardrails(decode_image(encode(make_photo(64, 64), "PNG")), model_input_size=(256, 256))
    assert report.quality.upscaled and report.quality.heavily_upscaled and report.quality.low_quality


def test_png_parameters_chunk_is_generator_evidence():
    info = PngInfo()
    info.add_text("parameters", "a cat in a hat, Steps: 30, Sampler: Euler a, Model: sdxl_base")
    meta = run_guardrails(decode_image(encode(make_photo(), "PNG", pnginfo=info))).metadata
    assert "parameters" in meta.text_chunks
    assert any("parameters" in h for h in meta.generator_hints)
    assert any("Generator trace" in line for line in meta.evidence())


def test_exif_camera_make():
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "EOS 5D"
    meta = run_guardrails(decode_image(encode(make_photo(), "JPEG", quality=92, exif=exif.tobytes()))).metadata
    assert meta.exif["make"] == "Canon" and meta.has_camera
    assert meta.to_json()["camera"] is True


def _face_files(n: int) -> list:
    rows = list(csv.DictReader(open(CORPUS / "manifest.csv")))
    faces = [CORPUS / r["path"] for r in rows if r["source"] == "faces-ffhq-vs-stylegan2" and r["split"] == "test"]
    return faces[:n]


@pytest.mark.skipif(not (CORPUS / "manifest.csv").exists(), reason="../shared/corpus not available")
def test_two_face_composite_gives_two_boxes_and_two_scores(official_tiny_wildrf):
    a, b = [Image.open(p).convert("RGB").resize((384, 384)) for p in _face_files(2)]
    canvas = Image.new("RGB", (800, 420), (235, 235, 235))
    canvas.paste(a, (8, 18))
    canvas.paste(b, (408, 18))
    det = Detector.load(official_tiny_wildrf)
    report = run_guardrails(decode_image(encode(canvas, "PNG")), det)
    assert len(report.faces) == 2
    xs = sorted(f.box[0] for f in report.faces)
    assert xs[0] < 400 <= xs[1]
    assert all(f.score is not None and 0 <= f.score <= 1 for f in report.faces)
    j = report.to_json()
    assert len(j["faces"]) == 2 and all(len(f["box"]) == 4 and "score" in f for f in j["faces"])
    assert j["max_face_score"] == pytest.approx(max(f.score for f in report.faces), abs=1e-6)

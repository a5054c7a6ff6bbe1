"""Guardrails on generated images and on real faces from the shared corpus."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image, ImageFilter
from PIL.PngImagePlugin import PngInfo

from core.scoring.detector import Detector
from core.scoring.guardrails import run_guardrails
from core.scoring.guardrails.quality import BLUR_THRESHOLD, blur_value, estimate_jpeg_quality
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


def test_64x64_image_is_too_small_without_a_model_input():
    # A native-resolution model never upscales; the image is still too small to judge.
    q = run_guardrails(decode_image(encode(make_photo(64, 64), "PNG"))).quality
    assert not q.upscaled and not q.heavily_upscaled
    assert q.too_small and q.low_quality and q.to_json()["too_small"] is True
    big = run_guardrails(decode_image(encode(make_photo(200, 130), "PNG"))).quality
    assert not big.too_small and not big.low_quality


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
    # Each score is the detector's own score of the face crop with margin (pixels, not re-encoded).
    from core.scoring.guardrails.faces import crop_decoded

    decoded = decode_image(encode(canvas, "PNG"))
    for f in report.faces:
        assert f.crop_box[0] <= f.box[0] and f.crop_box[2] >= f.box[2]
        direct = det.score(crop_decoded(decoded, f.crop_box))
        assert f.score == pytest.approx(direct.probability, abs=1e-6)
        assert f.logit == pytest.approx(direct.logit, abs=1e-6)


# -- quality details -----------------------------------------------------------
def test_sharp_subject_on_smooth_background_is_not_blurry():
    """A sharp patch on a featureless background (a portrait on bokeh, a horizon) counts as sharp:
    the measure uses the sharpest quarter of the image, not the whole-image average."""
    canvas = np.full((384, 512), 128, np.uint8)
    canvas[96:192, 128:256] = np.asarray(_sharp().convert("L"))[:96, :128]
    img = Image.fromarray(canvas).convert("RGB")
    q = run_guardrails(decode_image(encode(img, "PNG"))).quality
    assert not q.blurry and q.blur_whole is not None and q.blur_whole < q.blur


def test_blur_does_not_depend_on_resolution_for_large_images():
    img = make_photo(640, 480)
    big = img.resize((1920, 1440), Image.Resampling.BICUBIC)
    assert blur_value(big.resize((640, 480), Image.Resampling.LANCZOS)) == pytest.approx(blur_value(img), rel=0.5)


@pytest.mark.parametrize("quality", [5, 25, 50, 75, 90, 100])
def test_jpeg_quality_estimate_is_exact_for_libjpeg_tables(quality):
    data = encode(make_photo(96, 64), "JPEG", quality=quality)
    q = run_guardrails(decode_image(data)).quality
    assert q.jpeg_quality == quality and q.jpeg_standard_tables
    assert q.jpeg_subsampling in ("4:2:0", "4:4:4", "4:2:2")


def test_jpeg_quality_estimate_for_custom_tables_is_close():
    from core.scoring.guardrails.quality import _reference_tables

    luma, chroma = _reference_tables()[70]
    custom = {0: [int(v) + (1 if i % 7 == 0 else 0) for i, v in enumerate(luma)], 1: [int(v) for v in chroma]}
    data = encode(make_photo(96, 64), "JPEG", qtables=custom)
    q = run_guardrails(decode_image(data)).quality
    assert abs(q.jpeg_quality - 70) <= 5 and not q.jpeg_standard_tables


def test_image_at_least_model_input_is_not_upscaled():
    q = run_guardrails(decode_image(encode(make_photo(300, 260), "JPEG", quality=90)),
                       model_input_size=(256, 256)).quality
    assert not q.upscaled and not q.heavily_upscaled and not q.low_quality
    j = q.to_json()
    assert j["resolution_ratio"] == pytest.approx(260 / 256, abs=1e-3) and j["effective_resolution"] == [300, 260]


def test_screenshot_hints_need_two_signs():
    flat = Image.new("RGB", (1920, 1080), (240, 240, 240))
    q = run_guardrails(decode_image(encode(flat, "PNG"))).quality
    assert q.likely_screenshot and any("screen resolution" in h for h in q.screenshot_hints)
    photo = run_guardrails(decode_image(encode(make_photo(), "JPEG", quality=90))).quality
    assert not photo.likely_screenshot


# -- metadata details ----------------------------------------------------------
def test_exif_software_naming_a_generator_and_an_editor():
    exif = Image.Exif()
    exif[0x0131] = "Adobe Photoshop 25.0 (Generative Fill: Adobe Firefly)"
    meta = run_guardrails(decode_image(encode(make_photo(), "JPEG", quality=92, exif=exif.tobytes()))).metadata
    assert any("firefly" in h for h in meta.generator_hints)
    assert any("photoshop" in h for h in meta.editor_hints)
    assert meta.to_json()["software"].startswith("Adobe Photoshop")


def test_generator_names_match_whole_words_only():
    info = PngInfo()
    info.add_text("Description", "influx of visitors at the imagenet workshop")
    meta = run_guardrails(decode_image(encode(make_photo(), "PNG", pnginfo=info))).metadata
    assert meta.generator_hints == [] and "Description" in meta.text_chunks


def test_long_text_chunks_are_truncated():
    from core.scoring.guardrails.metadata import MAX_TEXT

    info = PngInfo()
    info.add_text("workflow", "{" + "x" * 5000 + "}")
    meta = run_guardrails(decode_image(encode(make_photo(), "PNG", pnginfo=info))).metadata
    assert len(meta.text_chunks["workflow"]) <= MAX_TEXT + 1
    assert any("workflow" in h for h in meta.generator_hints)


def test_exif_user_comment_with_sd_parameters():
    exif = Image.Exif()
    text = "a castle, Negative prompt: blurry, Steps: 20, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1"
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + text.encode("utf-16-be")
    meta = run_guardrails(decode_image(encode(make_photo(), "JPEG", quality=92, exif=exif.tobytes()))).metadata
    assert meta.exif["user_comment"].startswith("a castle")
    assert any("UserComment" in h for h in meta.generator_hints)


def test_xmp_digital_source_type_and_c2pa_markers():
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
           b'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"'
           b' xmp:CreatorTool="Adobe Firefly"/></rdf:RDF></x:xmpmeta>')
    meta = run_guardrails(decode_image(encode(make_photo(), "JPEG", quality=92, xmp=xmp))).metadata
    assert any("DigitalSourceType" in h for h in meta.xmp_hints)
    assert any("trainedalgorithmicmedia" in h for h in meta.generator_hints)
    assert not meta.c2pa
    # A C2PA manifest travels in APP11 JUMBF boxes; only metadata segments are searched.
    jpeg = encode(make_photo(), "JPEG", quality=92)
    payload = b"JP\x00\x01jumbc2pa.actions trainedAlgorithmicMedia"
    app11 = b"\xff\xeb" + (len(payload) + 2).to_bytes(2, "big") + payload
    forged = jpeg[:2] + app11 + jpeg[2:]
    from core.scoring.guardrails.metadata import read_metadata

    with Image.open(io.BytesIO(forged)) as container:
        meta = read_metadata(container, forged)
    assert meta.c2pa and any("C2PA" in h for h in meta.generator_hints)
    assert any("verify it" in line for line in meta.evidence())
    # With the C2PA library the bytes are only a marker: the library finds no manifest in them, so the
    # unsigned reading is dropped rather than counted as generator evidence (tests/test_provenance.py).
    report = run_guardrails(decode_image(forged))
    assert report.metadata.c2pa and report.metadata.c2pa_verified_elsewhere
    assert not any("C2PA" in h for h in report.metadata.generator_hints)
    assert not report.provenance.present and report.provenance.decision == "none"


def test_c2pa_text_inside_pixel_data_is_not_a_manifest():
    from core.scoring.guardrails.metadata import metadata_bytes

    jpeg = encode(make_photo(), "JPEG", quality=92)
    assert b"c2pa" not in metadata_bytes(jpeg[:-2] + b"c2pa" + jpeg[-2:])


def test_report_json_contract():
    j = run_guardrails(decode_image(encode(make_photo(), "JPEG", quality=80))).to_json()
    assert {"faces", "blur", "jpeg_quality", "metadata", "quality", "max_face_score", "timings_ms"} <= set(j)
    assert isinstance(j["faces"], list) and isinstance(j["metadata"], dict)
    assert isinstance(j["blur"], float) and isinstance(j["jpeg_quality"], (int, float))
    import json

    json.dumps(j)  # plain JSON types only


def test_no_face_in_a_synthetic_texture():
    assert run_guardrails(decode_image(encode(make_photo(), "PNG"))).faces == []

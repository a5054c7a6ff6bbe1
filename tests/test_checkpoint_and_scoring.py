"""Checkpoint format, spec validation, scoring API and the score CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from core.model.checkpoint import Checkpoint, load_checkpoint
from core.scoring.detector import Detector
from core.errors import CheckpointError
from core.model.models import build_model
from core.model.preprocess import PreprocessSpec, official_spec

from .conftest import encode, make_photo, save_random_tiny


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return save_random_tiny(tmp_path_factory.mktemp("ck") / "tiny.pt", seed=3)


def test_spec_fingerprint_is_stable_and_sensitive():
    a, b = official_spec("NPR"), official_spec("NPR")
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 12
    assert PreprocessSpec.from_dict(a.to_dict()) == a
    assert a.fingerprint() != PreprocessSpec(input_representation="NPR", interpolation="bicubic").fingerprint()
    assert a.fingerprint() != PreprocessSpec(input_representation="NPR", size=(128, 128)).fingerprint()


def test_invalid_spec_is_refused():
    with pytest.raises(CheckpointError, match="interpolation"):
        PreprocessSpec(interpolation="magic")
    with pytest.raises(CheckpointError, match="no preprocessing spec"):
        PreprocessSpec.from_dict({})


def test_checkpoint_without_spec_is_refused(tmp_path, tiny_ckpt):
    payload = torch.load(tiny_ckpt, weights_only=True)
    payload["preprocess"] = None
    bad = tmp_path / "nospec.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match="preprocess"):
        load_checkpoint(bad)
    bare = tmp_path / "bare.pth"
    torch.save(build_model("tiny", "right_diag").state_dict(), bare)
    with pytest.raises(CheckpointError, match="import-official"):
        load_checkpoint(bare)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(CheckpointError):
        load_checkpoint(junk)


def test_float16_round_trip(tmp_path, tiny_ckpt):
    ck = load_checkpoint(tiny_ckpt)
    half = tmp_path / "half.pt"
    ck.with_updates().save(half, dtype="float16")
    again = load_checkpoint(half)
    assert all(v.dtype == torch.float16 for v in again.state_dict.values() if v.is_floating_point())
    assert again.sha256 != ck.sha256


def test_score_api_reports_everything(tiny_ckpt):
    det = Detector.load(tiny_ckpt)
    img = make_photo(400, 300)
    r = det.score(encode(img, "JPEG", quality=92), name="x.jpg")
    assert r.patch_map_shape == [126, 126]
    assert r.logit == pytest.approx(float(r.patch_logits.astype(np.float64).mean()))
    assert r.calibrated is False and r.probability == pytest.approx(1 / (1 + np.exp(-r.logit)))
    assert set(r.poolings) >= {"mean", "max", "topk_mean"} and r.poolings["max"] >= r.poolings["topk_mean"] >= r.poolings["mean"]
    assert len(r.top_patches) == 5
    assert r.top_patches[0].logit == pytest.approx(float(r.patch_logits.max()))
    for p in r.top_patches:  # boxes in original-image pixels
        x0, y0, x1, y1 = p.box
        assert 0 <= x0 < x1 <= 400 and 0 <= y0 < y1 <= 300
    assert r.model["sha256"] == load_checkpoint(tiny_ckpt).sha256
    assert r.timings_ms["total"] >= r.timings_ms["forward"] > 0
    j = r.to_json()
    assert {"file", "sha256", "logit", "probability", "calibrated", "patch_map_shape",
            "model_sha256", "preprocess_fingerprint"} <= set(j)


def test_calibrated_probability_when_checkpoint_has_calibration(tmp_path, tiny_ckpt):
    ck = load_checkpoint(tiny_ckpt).with_updates(
        calibration={"method": "temperature", "params": {"temperature": 4.0}, "version": "t4"})
    ck.save(tmp_path / "cal.pt")
    r = Detector.load(tmp_path / "cal.pt").score(encode(make_photo(), "PNG"))
    assert r.calibrated is True and r.model["calibration_version"] == "t4"
    assert r.probability == pytest.approx(1 / (1 + np.exp(-r.logit / 4.0)))


def test_exif_rotated_jpeg_scores_like_its_upright_twin(tiny_ckpt):
    det = Detector.load(tiny_ckpt)
    upright = make_photo(300, 200, seed=5)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = encode(upright.transpose(Image.Transpose.ROTATE_90), "PNG", exif=exif.tobytes())
    a = det.score(encode(upright, "PNG"))
    b = det.score(rotated)
    assert b.image["exif_orientation"] == 6
    assert b.logit == pytest.approx(a.logit, abs=1e-5)
    assert np.allclose(a.patch_logits, b.patch_logits, atol=1e-4)


@pytest.mark.slow
def test_score_cli_json_lines_and_errors(tmp_path, tiny_ckpt):
    good = tmp_path / "good.png"
    good.write_bytes(encode(make_photo()))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    run = lambda *files: subprocess.run([sys.executable, "-m", "core", "score", "--model", str(tiny_ckpt), "--json", *files],
                                        capture_output=True, text=True)
    proc = run(str(good), str(bad))
    assert proc.returncode == 1, proc.stderr  # some files failed
    lines = {l["file"]: l for l in map(json.loads, proc.stdout.splitlines())}
    assert lines[str(good)]["patch_map_shape"] == [126, 126]
    assert isinstance(lines[str(good)]["calibrated"], bool) and len(lines[str(good)]["sha256"]) == 64
    assert "Traceback" not in lines[str(bad)]["error"] and lines[str(bad)]["error"]
    proc = run(str(bad))
    assert proc.returncode == 2 and json.loads(proc.stdout)["error"]

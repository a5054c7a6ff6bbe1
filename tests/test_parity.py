"""Parity with the official implementation, through our own import path."""
from __future__ import annotations

import numpy as np
import pytest

from core.model.checkpoint import import_official, load_checkpoint
from core.scoring.detector import Detector
from core.model.preprocess import to_model_input

from .conftest import PARITY, REFERENCE, needs_shared

pytestmark = needs_shared


def _close(actual, expected, rel=1e-4, abs_=1e-3):
    """Elementwise closeness, with a floor at float32 rounding of the map's scale.

    A patch computed as a sum of terms of size ``max|expected|`` carries float32
    rounding of that size whatever its own value (CPU kernels differ in summation
    order between machines), so the absolute floor is 1e-6 of the map's scale:
    about eight float32 ulps, far below any real mismatch.
    """
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    floor = max(abs_, 1e-6 * np.abs(expected).max())
    ok = np.abs(actual - expected) <= np.maximum(floor, rel * np.abs(expected))
    assert ok.all(), f"max abs diff {np.abs(actual - expected).max()}"


def test_preprocessing_reproduces_official_inputs(tmp_path, parity_expected):
    ckpt = import_official("tiny", REFERENCE / "official-tiny-ladeda" / "WildRF_Tiny_LaDeDa.pth", tmp_path / "p.pt")
    for i, name in enumerate(parity_expected["names"]):
        t = to_model_input(PARITY / "images" / str(name), ckpt.spec).tensor.numpy()[0]
        assert np.abs(t - parity_expected["inputs"][i]).max() <= 1e-5


@pytest.mark.parametrize("which", ["WildRF", "ForenSynth"])
@pytest.mark.parametrize("fast", [False, True])
def test_official_tiny_checkpoints_reproduce_official_outputs(tmp_path, parity_expected, which, fast):
    out = tmp_path / f"{which}.pt"
    import_official("tiny", REFERENCE / "official-tiny-ladeda" / f"{which}_Tiny_LaDeDa.pth", out)
    det = Detector.load(out, fast=fast)
    for i, name in enumerate(parity_expected["names"]):
        r = det.score(PARITY / "images" / str(name))
        expected = parity_expected[f"tiny_{which}_patch"][i, 0]
        if fast and which == "ForenSynth":
            # Patch logits reach 1e5 here; BN folding reorders float sums, so
            # compare against the map's scale (the eager run is checked to 1e-6 of it).
            assert np.abs(r.patch_logits - expected).max() <= 1e-5 * np.abs(expected).max()
        else:
            _close(r.patch_logits, expected)
        _close(r.logit, parity_expected[f"tiny_{which}_logit"][i, 0])
        assert r.patch_logits.mean() == pytest.approx(r.logit, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("fast", [False, True])
def test_ladeda9_random_weights_reproduce_official_outputs(tmp_path, parity_expected, fast):
    out = tmp_path / "l9.pt"
    import_official("ladeda9", PARITY / "ladeda9_npr_random_fp16.pth", out)
    ckpt = load_checkpoint(out)
    assert ckpt.spec.input_representation == "NPR" and ckpt.label == "LaDeDa9"
    det = Detector(ckpt, fast=fast)
    x = parity_expected["inputs"]
    import torch

    patch = det.patch_map(torch.from_numpy(x))
    _close(patch, parity_expected["ladeda9_patch"][:, 0])
    assert np.abs(patch - parity_expected["ladeda9_patch"][:, 0]).max() <= 1e-3
    _close(patch.mean(axis=(1, 2)), parity_expected["ladeda9_logit"][:, 0])
    r = det.score(PARITY / "images" / str(parity_expected["names"][0]))
    _close(r.logit, parity_expected["ladeda9_logit"][0, 0])


def test_import_official_cli_writes_a_loadable_checkpoint(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "t.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "core", "import-official", "--arch", "tiny",
         "--weights", str(REFERENCE / "official-tiny-ladeda" / "WildRF_Tiny_LaDeDa.pth"), "--out", str(out)],
        capture_output=True, text=True, check=True,
    )
    info = json.loads(proc.stdout)
    ckpt = load_checkpoint(out)
    assert info["model_sha256"] == ckpt.sha256
    assert "research" in ckpt.provenance["licence"].lower()
    assert ckpt.spec.size == (256, 256) and ckpt.spec.interpolation == "bilinear"
    assert ckpt.spec.input_representation == "right_diag"

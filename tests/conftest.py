"""Shared fixtures: paths to ../shared data and imported official checkpoints."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .pg_fixture import backend, new_db, pg_server  # noqa: F401  (store tests run on SQLite and PostgreSQL)

#: Blind double review re-queues a share of labelled items; tests of everything else run with it off,
#: tests/test_double_review.py turns it on per store. Subprocesses (CLI, servers) inherit this.
os.environ.setdefault("LADEDA_SECOND_REVIEW_SHARE", "off")
#: The background learner adapts after every 25 labels; tests of everything else label freely without
#: starting one (a daemon thread fitting heads beside a test is noise); tests/test_learn_loop.py sets it.
os.environ.setdefault("LADEDA_LEARN_EVERY", "off")

# Parity and scoring tests compare exact figures: serve fp32 unless a test asks for another path.
os.environ.setdefault("LADEDA_PRECISION", "fp32")

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LADEDA_SHARED_DIR", REPO.parent / "shared"))
REFERENCE = SHARED / "reference"
CORPUS = SHARED / "corpus"
PARITY = REFERENCE / "parity"

needs_shared = pytest.mark.skipif(
    not (PARITY / "expected.npz").exists(),
    reason=f"../shared reference data not found at {SHARED} (parity tests need it; CI has it)",
)
needs_corpus = pytest.mark.skipif(not (CORPUS / "manifest.csv").exists(), reason=f"corpus not found at {CORPUS}")


@pytest.fixture(scope="session")
def parity_expected():
    if not (PARITY / "expected.npz").exists():
        pytest.skip(f"../shared reference data not found at {SHARED}")
    return np.load(PARITY / "expected.npz")


@pytest.fixture(scope="session")
def official_tiny_wildrf(tmp_path_factory) -> Path:
    """The official Tiny (WildRF) weights imported through import-official."""
    src = REFERENCE / "official-tiny-ladeda" / "WildRF_Tiny_LaDeDa.pth"
    if not src.exists():
        pytest.skip(f"{src} not found")
    from core.model.checkpoint import import_official

    out = tmp_path_factory.mktemp("official") / "tiny_wildrf.pt"
    import_official("tiny", src, out)
    return out


def save_random_tiny(path: Path, *, seed: int = 0, dtype: str = "float32", **fields) -> Path:
    """Write a random-weight Tiny-LaDeDa checkpoint with the official spec.

    ``fields`` go into the checkpoint (``calibration``, ``tiers``, ``provenance``).
    """
    import torch

    from core.model.checkpoint import Checkpoint
    from core.model.models import arch_record, build_model
    from core.model.preprocess import official_spec

    torch.manual_seed(seed)
    model = build_model("tiny", "right_diag")
    fields.setdefault("provenance", {"source": "test"})
    Checkpoint(arch=arch_record("tiny"), spec=official_spec("right_diag"), state_dict=model.state_dict(),
               **fields).save(path, dtype=dtype)
    return Path(path)


def make_photo(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    """A smooth, photo-like RGB test image with some texture (deterministic)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([
        128 + 90 * np.sin(xx / 23.0 + seed),
        128 + 90 * np.cos(yy / 17.0),
        128 + 60 * np.sin((xx + yy) / 31.0),
    ], axis=-1)
    base += rng.normal(0, 12, size=base.shape)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")


def graded_noise_png(rng: np.random.Generator, i: int) -> bytes:
    """A 96×96 PNG: a smooth ramp plus noise whose strength varies with ``i`` (items that score apart)."""
    smooth = np.linspace(0, 255, 96)[None, :, None] * np.ones((96, 1, 3))
    noise = rng.normal(scale=4 + 3 * (i % 12), size=(96, 96, 3))
    arr = np.clip(smooth + noise + rng.integers(0, 60), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def chromium_path() -> str:
    """Debian's Chromium for the browser tests; they are skipped (with the reason) without it."""
    from dashboard import browser

    exe = browser.find_chromium()
    if exe is None:
        pytest.skip("Chromium not found at /usr/bin/chromium (install Debian's `chromium`; scripts/test.sh does)")
    return exe


def signed_in_app(page: str, name: str = "ana", timeout: int = 300):
    """The real app under AppTest with ``name`` signed in, switched to ``views/<page>.py``."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=timeout).run()
    at.text_input(key="reviewer_name_input").input(name)
    at.button[0].click()
    at.run()
    at.switch_page(f"views/{page}.py")
    return at.run()


#: Tolerances for numbers the same model computes in another process, thread or engine. Inference is
#: deterministic within one process, but a different thread count (or a CPU's own kernel choice, AVX-512
#: versus AVX2) sums the same products in another order: logits then differ in the 10th–12th digit.
#: 1e-6 is far below anything a tier, a reason or an analyst can see (the tier bands are 0.1 wide) and far
#: above summation noise; pooled features are float32 sums over thousands of patches, hence 1e-5.
SCORE_ABS_TOL = 1e-6
FEATURE_ABS_TOL = 1e-5
_FLOAT_KEYS = {"logit", "probability"}
_FEATURE_KEYS = {"pooled_features"}


def assert_same_rows(a: list[dict], b: list[dict]) -> None:
    """Rows of two engines or doors: scores within tolerance, everything else (tier, reasons, hashes,
    errors, order) exactly. JSON text columns are compared as parsed values, their numbers within tolerance."""
    import json

    assert len(a) == len(b), (len(a), len(b))
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys(), (sorted(ra), sorted(rb))
        for key in ra:
            x, y = ra[key], rb[key]
            if key in ("components", "ood") and isinstance(x, str) and isinstance(y, str):
                assert_close_tree(json.loads(x), json.loads(y), path=key)
            elif key in _FLOAT_KEYS and x is not None and y is not None:
                assert y == pytest.approx(x, abs=SCORE_ABS_TOL), (ra["path"], key)
            elif key in _FEATURE_KEYS and x is not None and y is not None:
                assert np.allclose(x, y, rtol=0, atol=FEATURE_ABS_TOL), (ra["path"], key)
            else:
                assert x == y, (ra.get("path"), key, x, y)


def assert_close_tree(x, y, *, path: str = "", tol: float = SCORE_ABS_TOL) -> None:
    """Nested dicts/lists: floats within ``tol``, everything else equal."""
    if isinstance(x, dict):
        assert isinstance(y, dict) and x.keys() == y.keys(), (path, x, y)
        for k in x:
            assert_close_tree(x[k], y[k], path=f"{path}.{k}", tol=tol)
    elif isinstance(x, (list, tuple)):
        assert isinstance(y, (list, tuple)) and len(x) == len(y), (path, x, y)
        for i, (u, v) in enumerate(zip(x, y)):
            assert_close_tree(u, v, path=f"{path}[{i}]", tol=tol)
    elif isinstance(x, float) or isinstance(y, float):
        assert y == pytest.approx(x, abs=tol), (path, x, y)
    else:
        assert x == y, (path, x, y)


@pytest.fixture(scope="module", name="encoder")
def clip_encoder():
    """The installed CLIP encoder (data/encoders/clip_encoder.int8.onnx); skips, saying why, without it."""
    from core.encoders.clip import encoder_status, load_encoder

    enc = load_encoder()
    if enc is None:
        pytest.skip(f"needs the CLIP encoder file (scripts/fetch_encoder.sh): {encoder_status()}")
    return enc

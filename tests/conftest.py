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

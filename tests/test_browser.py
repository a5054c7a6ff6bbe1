"""The dashboard in a real browser: Debian's Chromium driven by Playwright
against ``streamlit run`` on localhost.

Upload an image the test generates, see the verdict and the heatmap, send it
to review, claim it with the keyboard and label it in the queue, export the
batch and download the CSV. Screenshots and the server log are kept under
``test-artifacts/browser/``. Skipped (with the reason) only when Chromium
cannot be found; ``scripts/test.sh`` installs it.
"""
from __future__ import annotations

import csv
import io
import re
import shutil

import pytest

from core.paths import DEFAULT_MODEL
from dashboard import browser as B

from .conftest import REPO

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = REPO / "test-artifacts" / "browser"
STEP_MS = 45_000  # the bound on every wait after the first page load
FIRST_LOAD_MS = 180_000  # the first page load includes loading (and tracing) the model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """The bundled model when it exists; otherwise the official Tiny weights or a random Tiny."""
    if DEFAULT_MODEL.is_file():
        return DEFAULT_MODEL
    from .test_dashboard import _checkpoint

    return _checkpoint(tmp_path_factory.mktemp("browser-model") / "tiny.pt", "tiny", "right_diag")


@pytest.fixture()
def artifacts():
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def _shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _no_traceback(page) -> None:
    body = page.locator("body").inner_text(timeout=STEP_MS)
    assert "Traceback" not in body and "StreamlitAPIException" not in body


def test_browser_upload_verdict_review_label_export(tmp_path, chromium_path, model_path, artifacts):
    data_dir = tmp_path / "data"
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"definitely not a PNG")
    good = tmp_path / "browser-upload.png"
    good.write_bytes(B.photo_png(480, 360, seed=7))

    with B.streamlit_server(data_dir, model_path, log_path=artifacts / "streamlit.log", timeout_s=120) as url, \
            B.chromium(chromium_path) as ctx:
        page = ctx.new_page()
        page.set_default_timeout(STEP_MS)
        page.goto(url, timeout=FIRST_LOAD_MS)
        B.wait_app_ready(page, FIRST_LOAD_MS)
        assert (data_dir / "review.sqlite").is_file()  # created on first run
        header = page.locator(".st-key-app-header").inner_text()
        # one quiet line: model and reviewer; the calibration and preprocessing are in the sidebar's panel
        assert "reviewer not set" in header and "calibration" not in header.lower() and "\n" not in header.strip()
        B.set_reviewer(page, "browser-tester", STEP_MS)
        _shot(page, "01-start")

        # a bad file: a clear message, never a traceback
        B.upload(page, bad)
        page.get_by_text("Not a recognised image format").first.wait_for(timeout=STEP_MS)
        _no_traceback(page)
        _shot(page, "02-bad-file")

        # upload → verdict and heatmap
        timing = B.time_upload_to_verdict(page, good, timeout_ms=STEP_MS)
        verdict = page.locator(".st-key-inspect-verdict").inner_text()
        assert "P(fake)" in verdict and "browser-upload.png" in verdict
        assert re.search(r"\d+(\.\d+)?%", verdict)
        heatmap = page.locator('img[alt="LaDeDa local traces"]').first
        heatmap.wait_for(state="visible", timeout=STEP_MS)
        assert heatmap.evaluate("img => img.naturalWidth") > 0
        # the image itself sits beside the verdict, above the fold at 1280×800
        page.set_viewport_size({"width": 1280, "height": 800})
        B.wait_idle(page, STEP_MS)
        img_box = heatmap.bounding_box()
        verdict_box = page.locator(".st-key-inspect-verdict").bounding_box()
        assert img_box["y"] + img_box["height"] / 2 < 800 and verdict_box["y"] + 120 < 800, (img_box, verdict_box)
        assert abs(img_box["y"] - verdict_box["y"]) < 200  # side by side, not stacked
        page.screenshot(path=str(ARTIFACTS / "03-verdict-1280x800.png"))
        B.set_view(page, "inspect", "CLIP GradCAM")
        page.locator('img[alt="CLIP GradCAM overlay"], img[alt="the image"]').first.wait_for(state="visible", timeout=STEP_MS)
        page.set_viewport_size({"width": 800, "height": 900})
        B.wait_idle(page, STEP_MS)
        page.wait_for_function(  # a window that becomes narrow folds the sidebar away
            "() => document.querySelector('section[data-testid=\"stSidebar\"]')"
            ".getAttribute('data-collapsed') === 'true'", timeout=STEP_MS)
        page.wait_for_timeout(600)  # the slide-out transition
        page.screenshot(path=str(ARTIFACTS / "03-gradcam-800.png"))
        page.set_viewport_size({"width": 1400, "height": 2600})
        page.wait_for_function(  # and opens it again when the window is wide again
            "() => document.querySelector('section[data-testid=\"stSidebar\"]')"
            ".getAttribute('data-collapsed') === 'false'", timeout=STEP_MS)
        _no_traceback(page)
        _shot(page, "03-verdict")
        (artifacts / "timing.txt").write_text(f"upload→verdict {timing['verdict_s']:.3f} s, "
                                              f"upload→complete (GradCAM on) {timing['complete_s']:.3f} s\n")

        # → review queue
        page.get_by_role("button", name="Send to review").click()
        page.get_by_text("Queued for review").first.wait_for(timeout=STEP_MS)
        B.go_to(page, "Review", STEP_MS)
        page.keyboard.press("n")  # keyboard shortcut: claim next
        page.get_by_text("Leased to you until").first.wait_for(timeout=STEP_MS)
        page.get_by_role("heading", name="browser-upload.png").wait_for(timeout=STEP_MS)
        page.get_by_label("Note (optional)", exact=True).fill("checked in the browser")
        page.get_by_label("Note (optional)", exact=True).press("Enter")
        B.wait_idle(page, STEP_MS)
        _shot(page, "04-review-claimed")
        page.set_viewport_size({"width": 1280, "height": 800})
        B.wait_idle(page, STEP_MS)
        page.screenshot(path=str(ARTIFACTS / "04-review-1280x800.png"))
        review_img = page.locator('img[alt="LaDeDa local traces"]').first.bounding_box()
        assert review_img["y"] + review_img["height"] / 2 < 800, review_img
        page.set_viewport_size({"width": 1400, "height": 2600})
        page.locator('[class*="st-key-review-"][class*="-fake"] button').first.click()
        page.get_by_text("Labelled browser-upload.png as fake.").first.wait_for(timeout=STEP_MS)
        page.get_by_text("The queue is empty.").first.wait_for(timeout=STEP_MS)  # auto-claim found nothing
        _no_traceback(page)
        _shot(page, "05-review-labelled")

        # → export and download
        B.go_to(page, "Export", STEP_MS)
        page.get_by_role("button", name="Create export").click()
        page.get_by_text(re.compile(r"Export exp-\S+ written")).first.wait_for(timeout=STEP_MS)
        with page.expect_download(timeout=STEP_MS) as dl:
            page.get_by_role("button", name="Download CSV").first.click()
        csv_path = artifacts / "export.csv"
        dl.value.save_as(str(csv_path))
        _no_traceback(page)
        _shot(page, "06-export")

    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert len(rows) == 1
    assert rows[0]["label"] == "fake" and rows[0]["reviewer"] == "browser-tester" and rows[0]["logit"]

"""What an analyst sees while waiting, in a real browser (Debian's Chromium against ``streamlit run``):

- the first page after a start says the model is loading (with how long it takes), never a blank page;
- while another analyst's image holds the model, an upload shows its place in the line, never a bare
  spinner, and both analyses still succeed;
- a window 800 px wide starts with the sidebar collapsed, and the verdict stays readable.

Screenshots go to ``test-artifacts/browser-waits/``.
"""
from __future__ import annotations

import shutil
import time

import pytest

from core.paths import DEFAULT_MODEL
from dashboard import browser as B

from .conftest import REPO

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = REPO / "test-artifacts" / "browser-waits"
STEP_MS = 90_000
FIRST_LOAD_MS = 240_000


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A model whose first load takes long enough to be seen: the bundled LaDeDa9, else a made one."""
    if DEFAULT_MODEL.is_file():
        return DEFAULT_MODEL
    from .test_dashboard import _checkpoint

    return _checkpoint(tmp_path_factory.mktemp("waits-model") / "ladeda9.pt", "ladeda9", "NPR")


@pytest.fixture()
def artifacts():
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def _body(page) -> str:
    return page.locator("body").inner_text(timeout=STEP_MS)


def _seen(page, text: str | tuple[str, ...], timeout_s: float) -> bool:
    """Poll the page text (every 50 ms) until ``text`` (or one of several) shows up; False when it never did."""
    texts = (text,) if isinstance(text, str) else text
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            body = page.locator("body").inner_text(timeout=2_000)
            if any(t in body for t in texts):
                return True
        except Exception:  # noqa: BLE001 - the page is mid-render; look again
            pass
        time.sleep(0.05)
    return False


def test_loading_notice_then_queue_position_then_narrow_layout(tmp_path, chromium_path, model_path, artifacts):
    data_dir = tmp_path / "data"
    big = tmp_path / "first-analyst.png"
    big.write_bytes(B.photo_png(1600, 1200, seed=11))
    small = tmp_path / "second-analyst.png"
    small.write_bytes(B.photo_png(640, 480, seed=12))

    with B.streamlit_server(data_dir, model_path, log_path=artifacts / "streamlit.log", timeout_s=120) as url, \
            B.chromium(chromium_path, viewport=(1400, 1400)) as ctx:
        first = ctx.new_page()
        first.goto(url, timeout=FIRST_LOAD_MS)
        # the very first page of a fresh server: the model is being built, and the page says so
        assert _seen(first, "Loading the model (first start takes about", 60), _body(first)[:2000]
        first.screenshot(path=str(artifacts / "01-loading.png"))
        B.wait_app_ready(first, FIRST_LOAD_MS)
        assert "Loading the model" not in _body(first)  # gone once the model is ready

        second = ctx.new_page()  # a second analyst: its own Streamlit session on the same server
        second.goto(url, timeout=FIRST_LOAD_MS)
        B.wait_app_ready(second, FIRST_LOAD_MS)

        B.upload(first, big)
        # the first analysis holds the model now: its first pass, or (the verdict first, from CLIP's pass)
        # LaDeDa's pass under the provisional card
        assert _seen(first, ("Scoring the image", "Reading LaDeDa's local traces"), 30), _body(first)[:2000]
        B.upload(second, small)
        assert _seen(second, "ahead of yours", 60), _body(second)[:2000]
        second.screenshot(path=str(artifacts / "02-queue-position.png"))
        for page, name in ((first, big.name), (second, small.name)):
            page.locator(".st-key-inspect-done").filter(has_text=name).wait_for(state="attached", timeout=STEP_MS)
            body = _body(page)
            assert "Traceback" not in body and "Something went wrong" not in body
            assert "P(fake)" in page.locator(".st-key-inspect-verdict").inner_text()

        narrow = ctx.new_page()
        narrow.set_viewport_size({"width": 800, "height": 900})
        narrow.goto(url, timeout=FIRST_LOAD_MS)
        B.wait_app_ready(narrow, FIRST_LOAD_MS)
        sidebar = narrow.locator('section[data-testid="stSidebar"]')
        narrow.wait_for_function(
            "() => document.querySelector('section[data-testid=\"stSidebar\"]')"
            ".getAttribute('data-collapsed') === 'true'", timeout=STEP_MS)
        B.upload(narrow, small)  # already scored: answered from the store
        narrow.locator(".st-key-inspect-done").filter(has_text=small.name).wait_for(state="attached", timeout=STEP_MS)
        B.wait_idle(narrow, STEP_MS)
        verdict = narrow.locator(".st-key-inspect-verdict").filter(has_text="P(fake)")
        verdict.wait_for(state="visible", timeout=STEP_MS)
        box = verdict.bounding_box()
        # the page keeps its width (the collapsed sidebar takes none of it) and no label is cut short
        assert box["width"] > 0.33 * 800 and box["x"] + box["width"] <= 800, box
        assert "P(fake)" in verdict.inner_text()
        truncated = verdict.evaluate("""v => Array.from(v.querySelectorAll('*'))
            .filter(e => e.children.length === 0 && e.textContent.trim() && e.scrollWidth > e.clientWidth + 1)
            .map(e => e.textContent.trim())""")
        assert truncated == [], truncated
        narrow.screenshot(path=str(artifacts / "03-inspect-800.png"))
        # the chevron still opens it
        narrow.locator('[data-testid="stExpandSidebarButton"]').first.click()
        narrow.wait_for_function(
            "() => document.querySelector('section[data-testid=\"stSidebar\"]')"
            ".getAttribute('data-collapsed') === 'false'", timeout=STEP_MS)
        assert sidebar.get_by_label("Your name", exact=True).count() == 1

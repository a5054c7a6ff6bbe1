"""Issue 29's screens in a real browser (Chromium at 1440 and 1280 px wide): the verdict is first
shown provisional, the card names each part's share of the served logit, the two maps are named for
their parts, and no map of an earlier upload is ever on screen under a newer verdict.

The provisional phase is short (one CLIP pass), so it is recorded by a MutationObserver installed in
the page before each upload rather than by polling: every time the DOM changes, the observer notes
which verdict card is present (provisional or final, for which file) and the ``src`` of every map
image then on screen. Streamlit serves images under content-hashed URLs, so a map of another image
has another ``src``.
"""
from __future__ import annotations

import pytest

from dashboard import browser as B

from .test_browser import FIRST_LOAD_MS, STEP_MS, _no_traceback, model_path  # noqa: F401 (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: Records (card kind, file name in the card, map srcs) on every DOM change after an upload starts.
OBSERVER_JS = """() => {
  window.__walk = [];
  const snap = () => {
    const prov = document.querySelector('.st-key-inspect-provisional-verdict');
    const fin = document.querySelector('.st-key-inspect-verdict');
    const card = prov || fin;
    const maps = Array.from(document.querySelectorAll(
        'img[alt="LaDeDa local traces"], img[alt="CLIP GradCAM overlay"]')).map(i => i.getAttribute('src'));
    window.__walk.push({kind: prov ? 'provisional' : (fin ? 'final' : 'none'),
                        text: card ? card.innerText : '', maps});
  };
  if (window.__obs) window.__obs.disconnect();
  window.__obs = new MutationObserver(snap);
  window.__obs.observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
}"""


def _walk_upload(page, path) -> list[dict]:
    """Upload ``path`` with the observer on; the recorded DOM states until the page is complete."""
    page.evaluate(OBSERVER_JS)
    B.time_upload_to_verdict(page, path, timeout_ms=STEP_MS)
    B.wait_idle(page, STEP_MS)
    return page.evaluate("() => { window.__obs.disconnect(); return window.__walk; }")


def _maps_src(page) -> set[str]:
    return set(page.evaluate("""() => Array.from(document.querySelectorAll(
        'img[alt="LaDeDa local traces"], img[alt="CLIP GradCAM overlay"]')).map(i => i.getAttribute('src'))"""))


@pytest.mark.parametrize("width", [1440, 1280])
def test_provisional_then_final_with_shares_named_maps_and_no_stale_map(tmp_path, model_path, width):  # noqa: F811
    from core.encoders.clip import load_encoder

    if load_encoder() is None:
        pytest.skip("needs the CLIP encoder (scripts/fetch_encoder.sh): without it LaDeDa decides alone")
    first, second = tmp_path / "first-upload.png", tmp_path / "second-upload.png"
    first.write_bytes(B.photo_png(640, 480, seed=31))
    second.write_bytes(B.photo_png(640, 480, seed=32))
    shots = tmp_path / "shots"
    shots.mkdir()
    with B.streamlit_server(tmp_path / "data", model_path, log_path=tmp_path / "streamlit.log", timeout_s=120) as url, \
            B.chromium(viewport=(width, 900)) as ctx:
        page = ctx.new_page()
        page.set_default_timeout(STEP_MS)
        page.goto(url, timeout=FIRST_LOAD_MS)
        B.wait_app_ready(page, FIRST_LOAD_MS)

        walk = _walk_upload(page, first)
        kinds = [s["kind"] for s in walk if "first-upload.png" in s["text"]]
        # the verdict was on screen as provisional before the final card replaced it
        assert "provisional" in kinds and kinds[-1] == "final", kinds
        assert kinds.index("provisional") < len(kinds) - 1 - kinds[::-1].index("final")
        prov_text = next(s["text"] for s in walk if s["kind"] == "provisional" and "first-upload.png" in s["text"])
        assert "provisional" in prov_text.lower()
        # no map is drawn under the provisional card (LaDeDa's pass is not in yet)
        assert all(not s["maps"] for s in walk if s["kind"] == "provisional"), walk

        card = page.locator(".st-key-inspect-verdict").inner_text()
        assert "Who decided" in card and "CLIP second opinion" in card and "LaDeDa local traces" in card
        assert card.count("%") >= 3  # P(fake) and a share per part
        ladeda_map = page.locator('img[alt="LaDeDa local traces"]').first
        ladeda_map.wait_for(state="visible")
        assert "LaDeDa local traces" in page.locator(".st-key-inspect-view").inner_text()
        first_maps = _maps_src(page)
        page.screenshot(path=str(shots / f"ladeda-{width}.png"), full_page=True)

        B.set_view(page, "inspect", "CLIP GradCAM")
        page.locator('img[alt="CLIP GradCAM overlay"]').first.wait_for(state="visible")
        body = page.locator("body").inner_text()
        assert "CLIP saw" in body or "centre crop" in body.lower()  # the area CLIP saw is named
        first_maps |= _maps_src(page)
        assert first_maps

        # a second upload: while its verdict is shown, no map of the first image is on screen
        walk = _walk_upload(page, second)
        under_second = [s for s in walk if "second-upload.png" in s["text"]]
        assert under_second and under_second[-1]["kind"] == "final"
        stale = [s for s in under_second if set(s["maps"]) & first_maps]
        assert not stale, stale[:3]
        assert _maps_src(page) and not (_maps_src(page) & first_maps)  # the second image's own map, in place
        page.screenshot(path=str(shots / f"gradcam-second-{width}.png"), full_page=True)
        _no_traceback(page)

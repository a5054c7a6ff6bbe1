"""Drive the dashboard in a real browser: start ``streamlit run`` on localhost
and Debian's Chromium through Playwright. Used by the browser test and by
``benchmarks/bench_browser.py``; not imported by the app.

Chromium runs headless, sandbox off (containers), no GPU, no background
networking or component updates, with a fresh profile directory each time;
the server binds 127.0.0.1 only, so nothing leaves the machine.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/lib/chromium/chromium")


def find_chromium() -> str | None:
    """Debian's Chromium ($LADEDA_CHROMIUM overrides), or None."""
    env = os.environ.get("LADEDA_CHROMIUM")
    for cand in ([env] if env else []) + list(CHROMIUM_CANDIDATES) + [shutil.which("chromium") or ""]:
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
            return resp.status == 200 and resp.read().strip() == b"ok"
    except OSError:
        return False


@contextlib.contextmanager
def streamlit_server(data_dir: str | os.PathLike, model: str | os.PathLike | None = None, *,
                     log_path: str | os.PathLike | None = None, timeout_s: float = 120.0,
                     extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """``python -m streamlit run dashboard/app.py`` on a free localhost port; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "LADEDA_DATA_DIR": str(data_dir), **(extra_env or {})}
    if model is not None:
        env["LADEDA_MODEL"] = str(model)
    cmd = [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(url):
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {proc.returncode} before becoming healthy")
            if time.monotonic() > deadline:
                raise TimeoutError(f"streamlit did not become healthy within {timeout_s:.0f} s")
            time.sleep(0.25)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # our own process group (start_new_session)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        if log_path:
            log.close()


@contextlib.contextmanager
def chromium(executable: str | None = None, *, viewport: tuple[int, int] = (1400, 2600)):
    """A Playwright browser context on a fresh, throw-away profile directory.

    The default viewport is tall because Streamlit scrolls inside its own main
    container, so a "full page" screenshot only ever shows the viewport.
    """
    from playwright.sync_api import sync_playwright

    exe = executable or find_chromium()
    if exe is None:
        raise FileNotFoundError("Chromium not found (install Debian's `chromium` package)")
    profile = tempfile.mkdtemp(prefix="ladeda-chromium-")
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                profile, executable_path=exe, headless=True, args=CHROMIUM_ARGS, accept_downloads=True,
                viewport={"width": viewport[0], "height": viewport[1]})
            try:
                yield ctx
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def photo_png(width: int = 480, height: int = 360, seed: int = 0) -> bytes:
    """A deterministic, photo-like PNG (smooth colour fields plus sensor-like noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([128 + 90 * np.sin(xx / (19.0 + seed % 7) + seed),
                     128 + 90 * np.cos(yy / 17.0 + seed / 3),
                     128 + 60 * np.sin((xx + yy) / 31.0)], axis=-1)
    base += rng.normal(0, 10, size=base.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB").save(buf, "PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------
# page actions (Streamlit DOM)
# ---------------------------------------------------------------------------
def wait_app_ready(page, timeout_ms: int = 180_000) -> None:
    """Until the app has rendered its header (the model is loaded) and stopped running."""
    page.locator(".st-key-app-header").wait_for(state="visible", timeout=timeout_ms)
    page.get_by_role("heading", level=1).first.wait_for(state="visible", timeout=timeout_ms)
    wait_idle(page, timeout_ms)


def wait_idle(page, timeout_ms: int = 60_000) -> None:
    """Until Streamlit reports that no script is running (the app root's script state)."""
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(
        state="attached", timeout=timeout_ms)


def wait_images(page, timeout_ms: int = 60_000) -> None:
    """Until every <img> on the page has loaded (Streamlit serves images as separate media requests)."""
    page.wait_for_function(
        "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)", timeout=timeout_ms)


def set_reviewer(page, name: str, timeout_ms: int = 30_000) -> None:
    page.get_by_label("Your name", exact=True).fill(name)
    page.get_by_role("button", name="Start reviewing").click()
    page.get_by_text(f"{name} (unauthenticated)").first.wait_for(timeout=timeout_ms)


def go_to(page, title: str, timeout_ms: int = 60_000) -> None:
    """Switch page through the sidebar navigation (keeps the browser session)."""
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title).click()
    page.get_by_role("heading", level=1).filter(has_text=title.split()[0]).first.wait_for(timeout=timeout_ms)
    wait_idle(page, timeout_ms)


def set_toggle(page, key: str, on: bool, timeout_ms: int = 60_000) -> None:
    """Switch the ``st.toggle`` with this key on or off (clicking its label)."""
    box = page.locator(f".st-key-{key}")
    if box.get_by_role("switch").is_checked() != on:
        box.locator("label").first.click()
        page.wait_for_function(
            f"() => document.querySelector('.st-key-{key} input').checked === {str(on).lower()}", timeout=timeout_ms)
        wait_idle(page, timeout_ms)


def set_view(page, key: str, view: str, timeout_ms: int = 60_000) -> None:
    """Pick the picture's view (``LaDeDa local traces``, ``CLIP GradCAM`` or ``Plain``) of the image viewer ``key``."""
    page.locator(f".st-key-{key}-view").get_by_text(view, exact=True).first.click()
    wait_idle(page, timeout_ms)


def upload(page, path: str | os.PathLike) -> None:
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(path))


def time_upload_to_verdict(page, path: str | os.PathLike, *, timeout_ms: int = 120_000) -> dict[str, float]:
    """Upload ``path`` on Inspect; seconds until its verdict card is on screen (``verdict_s``) and
    until the whole page, CLIP's GradCAM included when it is on, has rendered and every image has loaded
    (``complete_s``)."""
    name = Path(path).name
    t0 = time.perf_counter()
    upload(page, path)
    # the provisional verdict (before faces, quality and metadata) or the final one, whichever is first
    page.locator(".st-key-inspect-verdict, .st-key-inspect-provisional-verdict").filter(has_text=name).first.wait_for(
        state="visible", timeout=timeout_ms)
    out = {"verdict_s": time.perf_counter() - t0}
    page.locator(".st-key-inspect-done").filter(has_text=name).wait_for(state="attached", timeout=timeout_ms)
    wait_images(page, timeout_ms)
    out["complete_s"] = time.perf_counter() - t0
    return out

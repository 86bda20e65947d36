"""End to end in a real browser: ``streamlit run app/main.py`` on the quick demo, driven by Debian's
chromium through playwright (never ``playwright install``; skipped when /usr/bin/chromium is missing).

Checks that the deck.gl map is drawn, that a sound query with the shared robin recording adds the
heatmap (its caption on the page and a ``heatmap`` layer in the deck JSON the server sends), that
humpback.ogg then draws another heatmap and that a description answers, and
that the page fetches nothing from outside this machine; that hovering a tile shows its tooltip and clicking
it makes it the tile listened to. A screenshot goes to ``tmp_path``, and to
``docs/img/app.png`` when ``GEOAUDIO_SCREENSHOT=1``.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest


pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ROBIN = ROOT.parent / "shared" / "data" / "audio" / "robin.ogg"
HUMPBACK = ROOT.parent / "shared" / "data" / "audio" / "humpback.ogg"
HEATMAP_IMAGE = re.compile(rb'"id": "heatmap",\s*"image": "(data:image/[a-z]+;base64,[A-Za-z0-9+/=]+)')
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = ROOT / "docs" / "img" / "app.png"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def _local(url: str) -> bool:
    """Whether a request stays on this machine (the app's server, data: and blob: URLs)."""
    parsed = urlparse(url)
    return parsed.scheme in ("data", "blob") or parsed.hostname in LOCAL_HOSTS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"streamlit did not answer at {url} within {timeout_s:.0f} s")


@pytest.fixture
def server(quick_demo, tmp_path):  # noqa: F811
    if not CHROMIUM.is_file():
        pytest.skip("/usr/bin/chromium is missing (make browser installs Debian's chromium)")
    port = _free_port()
    env = {**os.environ, "GEOAUDIO_DEMO_DIR": str(quick_demo.root), "GEOAUDIO_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    log = (tmp_path / "streamlit.log").open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_map_and_sound_query_in_chromium(server, tmp_path):
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    outside: list[str] = []
    frames: list[bytes] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda r: None if _local(r.url) else outside.append(r.url))
            page.on("websocket", lambda ws: ws.on("framereceived",
                                                  lambda payload: frames.append(payload if isinstance(payload, bytes)
                                                                                else payload.encode())))
            page.goto(server)
            page.locator('[data-testid="stDeckGlJsonChart"] canvas').first.wait_for(timeout=60_000)
            assert not any(b'"id": "heatmap"' in f for f in frames)
            page.locator('[data-testid="stFileUploader"] input[type="file"]').first.set_input_files(str(ROBIN))
            page.get_by_text("Similarity heatmap of your recording robin.ogg").wait_for(timeout=60_000)
            page.get_by_text("Most like your recording robin.ogg").wait_for(timeout=10_000)
            page.locator('[data-testid="stDeckGlJsonChart"] canvas').first.wait_for(timeout=10_000)
            page.wait_for_timeout(1500)  # let deck.gl draw the new bitmap
            page.screenshot(path=str(tmp_path / "app.png"))
            robin, sent = _heatmaps(frames), len(frames)
            page.locator('[data-testid="stFileUploader"] input[type="file"]').first.set_input_files(str(HUMPBACK))
            page.get_by_text("Similarity heatmap of your recording humpback.ogg").wait_for(timeout=60_000)
            page.wait_for_timeout(500)
            humpback = _heatmaps(frames[sent:])  # what the page was sent after the humpback upload
            page.get_by_text("a description").click()
            page.get_by_label("Describe the sound").fill("water")
            page.get_by_label("Describe the sound").press("Enter")
            page.get_by_text('Similarity heatmap of the description "water"').wait_for(timeout=60_000)
            page.get_by_text('Recordings matching "water"').wait_for(timeout=10_000)
        finally:
            browser.close()
    assert robin and humpback, "each query sends its heatmap to the page"
    assert humpback.isdisjoint(robin)  # robin.ogg and humpback.ogg give different heatmaps
    assert outside == [], f"the page fetched from outside this machine: {outside[:5]}"
    assert (tmp_path / "app.png").stat().st_size > 10_000
    if os.environ.get("GEOAUDIO_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "app.png", SCREENSHOT)
    assert time.monotonic() - started < 120


def _heatmaps(frames: list[bytes]) -> set[bytes]:
    """The heatmap images (data URLs) in the deck JSON the server has sent so far."""
    return {m.group(1) for f in frames for m in HEATMAP_IMAGE.finditer(f)}


def test_landsat_preview_and_layer_settings_kept_through_switches_in_chromium(server):
    """The Landsat sample (not mapped at the demo's 0.5 m) shows its imagery and caption; the land-cover
    toggle stays on through a backend switch and a visit to that scene, whose page draws no layer widgets."""
    from playwright.sync_api import expect, sync_playwright

    if not (ROOT.parent / "shared" / "data" / "geotiff" / "RGB.byte.tif").is_file():
        pytest.skip("../shared/data/geotiff/RGB.byte.tif is not present")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server)
            canvas = page.locator('[data-testid="stDeckGlJsonChart"] canvas').first
            canvas.wait_for(timeout=60_000)
            sidebar = page.locator('[data-testid="stSidebar"]')
            landcover = sidebar.get_by_role("checkbox", name="Land cover", exact=True)
            landcover.check(force=True)  # Streamlit draws its own box over the input
            page.get_by_text("Land cover:").wait_for(timeout=30_000)  # the legend of the new layer
            sidebar.locator('[data-testid="stSelectbox"]').first.click()
            page.get_by_role("option", name="torch").click()
            sidebar.get_by_text("Landsat sample").click()
            page.get_by_text("Imagery of the Landsat sample (preview, not mapped)").wait_for(timeout=60_000)
            page.get_by_text("Not mapped: RGB.byte.tif").wait_for(timeout=10_000)
            canvas.wait_for(timeout=10_000)
            expect(landcover).to_have_count(0)  # no layer widgets for a scene that is not mapped
            sidebar.get_by_text("Demo scene").click()
            page.get_by_text("Land cover:").wait_for(timeout=60_000)
            expect(landcover).to_be_checked()
        finally:
            browser.close()


def test_hovering_and_clicking_a_tile_in_chromium(server):
    """Hovering a tile shows its tooltip (tile, centre in the scene's CRS and degrees, land cover); clicking
    it makes it the tile listened to. The quick demo's 6 x 6 tiles fill 85 % of the map's height around its
    centre, so 40 px right of and below the centre is inside tile r3 c3."""
    import re

    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server)
            canvas = page.locator('[data-testid="stDeckGlJsonChart"] canvas').first
            canvas.wait_for(timeout=60_000)
            listened = page.get_by_role("combobox", name="Tile (row, column; or click a tile on the map)")
            expect(listened).to_have_value(re.compile(r"^r0 c0: "), timeout=30_000)
            page.wait_for_timeout(1500)  # let deck.gl draw, so it can pick
            box = canvas.bounding_box()
            x, y = box["x"] + box["width"] / 2 + 40, box["y"] + box["height"] / 2 + 40
            page.mouse.move(x - 5, y - 5)
            page.mouse.move(x, y)
            tip = page.locator(".deck-tooltip").filter(has_text="tile r3 c3")
            tip.wait_for(timeout=10_000)
            text = tip.inner_text()
            assert "EPSG:32632" in text and "° N" in text and "land cover:" in text
            page.mouse.click(x, y)
            expect(listened).to_have_value(re.compile(r"^r3 c3: "), timeout=30_000)
        finally:
            browser.close()

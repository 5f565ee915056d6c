"""The sweep screen in a real browser: Debian's chromium driven by Playwright."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import app

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-gpu"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url(guards, tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser-explore")
    demo = app.build_demo(guards, tiny=True, swatch_dir=str(folder / "swatches"))
    _, address, _ = app.launch(demo, prevent_thread_lock=True, server_port=free_port(), quiet=True)
    yield address
    demo.close()


@pytest.fixture(scope="module")
def page(url):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1360, "height": 1000})
        page.goto(url)
        page.wait_for_selector("#gl-sweep")
        yield page
        browser.close()


def test_sweep_marks_the_row_that_flips(page):
    page.get_by_role("button", name="Harmful request").click()
    page.wait_for_function("document.querySelectorAll('.gl-role').length === 1")
    page.locator("#gl-sweep").click()
    table = page.locator("#gl-sweep-table")
    table.wait_for(timeout=60_000)
    rows = table.locator("tbody tr")
    assert rows.count() == 15  # all enabled, then each of the 14 categories left out
    flipped = table.locator("tr.gl-flip")
    assert flipped.count() == 1
    cells = flipped.locator("td").all_inner_texts()
    assert [cells[0], cells[1], cells[4]] == ["without S1", "safe", "flips to safe"]
    assert rows.first.locator("td").all_inner_texts()[:3] == ["all enabled", "unsafe", "S1"]
    summary = page.locator("#gl-sweep-view .gl-explore-summary").inner_text()
    assert summary == "Excluding S1 flips the verdict to safe."
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#gl-sweep-view").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "app_sweep.png"))

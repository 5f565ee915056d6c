"""The sweep screen in a real browser: Debian's chromium driven by Playwright."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import launch_app

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


@pytest.fixture(scope="module")
def url(guards, tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser-explore")
    demo, address = launch_app(guards, folder)
    yield address
    demo.close()


@pytest.fixture(scope="module")
def page(browser, url):
    page = browser.new_page(viewport={"width": 1360, "height": 1000})
    page.goto(url)
    page.wait_for_selector("#gl-sweep")
    yield page
    page.close()


def test_sweep_marks_the_row_that_flips(page):
    page.get_by_role("button", name="Harmful request").click()
    page.wait_for_function("document.querySelectorAll('.gl-role').length === 1")
    page.locator("#gl-sweep").click()
    table = page.locator("#gl-sweep-table")
    table.wait_for(timeout=120_000)
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

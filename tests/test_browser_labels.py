"""Review in a real browser: run, mark the model wrong, save, find the example, export it."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import launch_app

from labels import Store

pytestmark = pytest.mark.browser


@pytest.fixture
def served(guards, tmp_path):
    with Store(tmp_path / "labels.db") as store:
        demo, url = launch_app(guards, tmp_path, store=store)
        yield url, store
        demo.close()


def test_review_find_and_export_a_harmful_request(browser, served):
    url, store = served
    page = browser.new_page(viewport={"width": 1360, "height": 1500})
    try:
        page.goto(url)
        page.wait_for_selector("#gl-add")
        page.locator("#gl-reviewer-name input, #gl-reviewer-name textarea").fill("ana")
        page.get_by_role("button", name="Harmful request", exact=True).click()
        page.wait_for_selector(".gl-role")
        page.keyboard.press("Alt+r")  # the Run shortcut
        page.wait_for_selector("#gl-review", state="visible", timeout=30_000)
        page.keyboard.press("Alt+w")  # the "model wrong" shortcut
        review = page.locator("#gl-review")
        review.locator("#gl-review-label label", has_text="unsafe").click()
        categories = review.locator("#gl-review-categories")
        for code in ("S1", "S2"):
            categories.locator("label", has_text=code).first.click()
        page.locator("#gl-save-label").click()
        page.wait_for_selector("#gl-review-status", timeout=15_000)
        assert "by ana" in page.locator("#gl-review-status").inner_text()
        [saved] = store.get_example(1).labels
        assert (saved.reviewer, saved.label, saved.categories) == ("ana", "unsafe", ("S1", "S2"))

        page.get_by_role("tab", name="Labeled examples").click()
        page.locator("#gl-labels-refresh").click()
        table = page.locator("#gl-labels-table")
        table.get_by_test_id("cell-0-8").get_by_text("ana: unsafe").wait_for(timeout=15_000)
        page.locator("#gl-export").click()
        link = page.locator("#gl-export-file a").first
        link.wait_for(timeout=15_000)
        with page.expect_download() as download:
            link.click()
        assert download.value.suggested_filename.endswith(".jsonl")
        [line] = Path(download.value.path()).read_text().splitlines()
        assert '"reviewer": "ana"' in line.replace('":"', '": "')
    finally:
        page.close()

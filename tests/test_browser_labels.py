"""Review in a real browser: run, mark the model wrong, save, find the example, export it; the
list read at 1366 px; refusals as toasts that leave the Open panel as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import launch_app
from test_labels_helpers import example, label

from guard_app.labeled.logic import LIST_HEADERS
from labels import Store

pytestmark = pytest.mark.browser


@pytest.fixture
def served(guards, tmp_path):
    with Store(tmp_path / "labels.db") as store:
        demo, url = launch_app(guards, tmp_path, store=store)
        yield url, store
        demo.close()


def cell(page, row: int, header: str):
    return page.locator("#gl-labels-table").get_by_test_id(
        f"cell-{row}-{LIST_HEADERS.index(header)}")


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
        page.wait_for_selector("#gl-review", state="visible", timeout=120_000)
        page.keyboard.press("Alt+w")  # the "model wrong" shortcut
        review = page.locator("#gl-review")
        review.locator("#gl-review-label label", has_text="unsafe").click()
        categories = review.locator("#gl-review-categories")
        for code in ("S1", "S2"):
            categories.locator("label", has_text=code).first.click()
        page.locator("#gl-save-label").click()
        page.wait_for_selector("#gl-review-status", timeout=120_000)
        assert "by ana" in page.locator("#gl-review-status").inner_text()
        [saved] = store.get_example(1).labels
        assert (saved.reviewer, saved.label, saved.categories) == ("ana", "unsafe", ("S1", "S2"))

        page.get_by_role("tab", name="Labeled examples").click()
        page.locator("#gl-labels-refresh").click()
        cell(page, 0, "reviewers").get_by_text("ana").wait_for(timeout=120_000)
        assert cell(page, 0, "gold").inner_text().strip() == "unsafe"
        page.locator("#gl-export").click()
        link = page.locator("#gl-export-file a").first
        link.wait_for(timeout=120_000)
        with page.expect_download() as download:
            link.click()
        assert download.value.suggested_filename.endswith(".jsonl")
        [line] = Path(download.value.path()).read_text().splitlines()
        assert '"reviewer": "ana"' in line.replace('":"', '": "')
    finally:
        page.close()


@pytest.fixture
def reviewed(served):
    """Three stored examples, the newest (listed first) labelled by ana and ben, who disagree."""
    url, store = served
    for text in ("How do I pick a lock?", "How do I open a safe?"):
        store.save_example(example(text), label("ana", "unsafe", ("S2",)))
    newest = store.save_example(example("The newest question about a lock"),
                                label("ana", "unsafe", ("S2",))).example_id
    store.add_label(newest, label("ben", "safe", ()))
    return url, store


def overflowing(page, selector: str) -> list[str]:
    """The elements under `selector` that scroll sideways (more content than width)."""
    return page.evaluate("""(selector) => [...document.querySelectorAll(
        `${selector}, ${selector} *`)].filter((el) => ['auto', 'scroll'].includes(
        getComputedStyle(el).overflowX) && el.scrollWidth > el.clientWidth + 1)
        .map((el) => `${el.tagName}.${el.className} ${el.scrollWidth} > ${el.clientWidth}`)""",
                         selector)


def toast(page, text: str):
    return page.locator(".toast-body").filter(has_text=text).first


def test_the_list_fits_1366_px_and_refusals_leave_the_open_example(browser, reviewed):
    url, store = reviewed
    page = browser.new_page(viewport={"width": 1366, "height": 1400})
    try:
        page.goto(url)
        page.wait_for_selector("#gl-add")
        page.locator("#gl-reviewer-name input, #gl-reviewer-name textarea").fill("ana")
        page.get_by_role("tab", name="Labeled examples").click()
        page.locator("#gl-labels-refresh").click()
        cell(page, 0, "disagree").get_by_text("model, reviewers").wait_for(timeout=120_000)
        headers = page.locator("#gl-labels-table thead th").all_inner_texts()
        assert [h.strip() for h in headers] == LIST_HEADERS
        assert overflowing(page, "#gl-labels-table") == []
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

        cell(page, 0, "preview").click()  # opens the newest example
        turns = page.locator("#gl-open-conversation")
        turns.get_by_text("The newest question about a lock").wait_for(timeout=120_000)
        categories = page.locator("#gl-edit-categories")
        s2 = categories.locator("label", has_text="S2").first.locator("input")
        assert s2.is_checked()  # ana's label, prefilled
        page.locator("#gl-edit-label").get_by_label("safe", exact=True).check()
        page.wait_for_function("""() => !document.querySelector(
            '#gl-edit-categories input:checked')""", timeout=120_000)

        # Delete with no reason: a toast says why; the open example stays as it was.
        page.locator("#gl-delete-id input").click()
        page.get_by_role("option", name="ben: safe").click()
        page.locator("#gl-delete").click()
        toast(page, "Say why the label is deleted").wait_for(timeout=120_000)
        assert turns.is_visible()
        assert "The newest question about a lock" in turns.inner_text()
        assert "Error" not in page.locator("#gl-open").inner_text()
        assert len(store.get_example(3).labels) == 2

        # Alt+P from the first example of the page stops there, with a message.
        page.keyboard.press("Alt+p")
        toast(page, "First example of this page").wait_for(timeout=120_000)
        assert "The newest question about a lock" in turns.inner_text()
        assert "Error" not in page.locator("#gl-open").inner_text()

        # The agreement screen lists where reviewers disagree; a row opens in the Open panel.
        cell(page, 2, "preview").click()
        turns.get_by_text("How do I pick a lock?").wait_for(timeout=120_000)
        page.locator("#gl-agreement").get_by_text("Agreement between reviewers").click()
        page.locator("#gl-agree").click()
        page.locator("#gl-disagree-caption").get_by_text("Reviewers disagree on").wait_for(
            timeout=120_000)
        found = page.locator("#gl-disagreements")
        assert found.get_by_test_id("cell-0-2").inner_text().strip() == \
            "ana: unsafe S2; ben: safe"
        found.get_by_test_id("cell-0-1").click()
        turns.get_by_text("The newest question about a lock").wait_for(timeout=120_000)
    finally:
        page.close()

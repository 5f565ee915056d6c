"""Prompt Guard labels in a real browser: a reviewer ticks a user message malicious on the
Review panel and benign in a queue, and both land in the store beside the Llama Guard label."""

from __future__ import annotations

import pytest
from test_browser_final_labels import WAIT, served, signed_in, start_queue  # noqa: F401

from labels import prompt_guard as pg
from labels import prompt_guard_rows

pytestmark = pytest.mark.browser


def test_a_reviewer_labels_prompt_guard_on_the_review_panel_and_in_a_queue(browser, served):  # noqa: F811
    url, store = served
    context, page = signed_in(browser, url, "alice", height=1400)
    try:
        page.get_by_role("button", name="Jailbreak attempt", exact=True).click()
        page.wait_for_selector(".gl-role")
        page.keyboard.press("Alt+r")
        review = page.locator("#gl-review")
        review.wait_for(state="visible", timeout=WAIT)
        # Nothing is ticked for Prompt Guard until the reviewer says.
        boxes = review.locator("#gl-review-pg-malicious input")
        boxes.first.wait_for(timeout=WAIT)
        assert not any(b.is_checked() for b in boxes.all())
        review.locator("#gl-review-pg-malicious").get_by_text("Message 1").click()
        review.locator("#gl-review-label").get_by_text("safe", exact=True).click()
        page.locator("#gl-save-label").click()
        status = page.locator("#gl-review-status")
        status.get_by_text("Prompt Guard: 1 malicious, 0 benign.").wait_for(timeout=WAIT)
        [row] = prompt_guard_rows(store)
        assert (row.message_index, row.malicious, row.model != "") == (0, True, True)

        start_queue(page)
        queue = page.locator("#gl-queue")
        queue.locator("#gl-queue-pg-benign").get_by_text("Message 1").click()
        queue.locator("#gl-queue-label").get_by_text("safe", exact=True).click()
        page.locator("#gl-queue-submit").click()
        page.locator("#gl-queue-status").get_by_text("Prompt Guard: 0 malicious, 1 benign.") \
            .wait_for(timeout=WAIT)
        queued = [x for x in store.iter_examples() if x.source.get("queue") == "pairs"]
        assert [(x.reviewer, x.value) for e in queued for x in pg.labels_of(store, e.id)] == [
            ("alice", "benign")]
    finally:
        context.close()

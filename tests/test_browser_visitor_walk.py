"""Refusals on the reviewer's face are messages, never "Error" badges (issue 22 item 5), found
walking the page as a reviewer: a wrong password covered the Password field with an "Error"
badge, and a refused Save replaced the status under it with one (leaving the last "Saved:"
line there), instead of saying what to do; and "Sign out" showed to visitors. Then the reviewer labels a run, Prompt Guard's
label included (issue 24 item 1), and saves it.
"""

from __future__ import annotations

import pytest
from helpers import serving_reviewers
from test_browser_visitor import WAIT, open_page, run_and_read, toast, turns_shown

pytestmark = pytest.mark.browser

ACCOUNTS = {"ana": "correct-horse-battery"}


@pytest.fixture(scope="module")
def served(guards, tiny_dirs, tmp_path_factory):
    with serving_reviewers(guards, tmp_path_factory.mktemp("visitor-walk"), ACCOUNTS) as served:
        yield served


def error_badges(page, selector: str) -> int:
    """Gradio's "Error" badges laid out inside `selector` (a raised gr.Error's outputs)."""
    return page.evaluate("(s) => [...document.querySelectorAll(s + ' .error')]"
                         ".filter((e) => e.offsetParent !== null).length", selector)


def test_a_reviewers_refusals_are_messages_and_the_prompt_guard_label_saves(browser, served):
    url, _ = served
    context, page = open_page(browser, url, "phone")
    page.locator("#gl-reviewer").get_by_text("Reviewer? Sign in").click()
    sign_out = page.locator("#gl-reviewer").get_by_role("button", name="Sign out", exact=True)
    page.locator("#gl-sign-in").wait_for(timeout=WAIT)
    assert not sign_out.is_visible()  # a visitor has no sign-in to end
    page.locator("#gl-reviewer-name input").fill("ana")
    password = page.locator("#gl-reviewer-password input")
    password.fill("wrong")
    page.locator("#gl-sign-in").click()
    page.locator("#gl-sign-in-refusal").get_by_text("Wrong reviewer name or password.").wait_for(
        timeout=WAIT)
    assert error_badges(page, "#gl-reviewer") == 0
    assert password.is_visible() and password.is_editable()
    password.fill(ACCOUNTS["ana"])
    password.press("Enter")
    page.locator("#gl-queue").wait_for(timeout=WAIT)
    if not sign_out.is_visible():  # the panel folds under the reviewer's name once signed in
        page.locator("#gl-reviewer").get_by_text("Signed in as ana").first.click()
    sign_out.wait_for(timeout=WAIT)
    page.get_by_role("button", name="Jailbreak attempt", exact=True).click()
    turns_shown(page, 1)
    run_and_read(page)
    review = page.locator("#gl-review")
    review.wait_for(timeout=WAIT)
    # Save with no label: said under Save, no badge.
    page.locator("#gl-save-label").click()
    page.locator("#gl-review-refusal").get_by_text("Not saved: Pick the correct label").wait_for(
        timeout=WAIT)
    assert error_badges(page, "#gl-review") == 0
    # The label, with Prompt Guard's for the user message, saves.
    review.locator("#gl-review-right").get_by_text("Right").click()
    page.wait_for_function("[...document.querySelectorAll('#gl-review-label input')]"
                           ".some((i) => i.checked)", timeout=WAIT)
    review.locator("#gl-review-pg-malicious label", has_text="Message 1").click()
    page.locator("#gl-save-label").click()
    page.locator("#gl-review-status").get_by_text("Prompt Guard: 1 malicious, 0 benign.").wait_for(
        timeout=WAIT)
    # Changing the conversation makes a second save a refusal that says the result is old.
    text = page.locator("#gl-text textarea")
    text.fill("I can't help with that.")
    text.press("Enter")
    turns_shown(page, 2)
    page.locator("#gl-stale").wait_for(timeout=WAIT)
    page.locator("#gl-save-label").click()
    page.locator("#gl-review-refusal").get_by_text("The result shown is out of date").wait_for(
        timeout=WAIT)
    toast(page, "The result shown is out of date")
    assert error_badges(page, "#gl-review") == 0
    assert page.locator("#gl-review-status").count() == 0  # the old "Saved:" line is gone
    sign_out.click()
    page.locator("#gl-queue").wait_for(state="hidden", timeout=WAIT)
    sign_out.wait_for(state="hidden", timeout=WAIT)
    context.close()

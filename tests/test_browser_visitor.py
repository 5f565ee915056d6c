"""The visitor's page first (issue 22), in a real browser at 1366x768 and 390x844, anonymous
and signed in: positions are read from the layout (bounding boxes), and each face leaves a
screenshot under artifacts/visitor/.

1. two faces of one page; 2. run and result in one screen; 3. never a stale verdict; 4. work
survives a reload; 5. a composer that never breaks; 6. plain words first.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import serving_reviewers
from PIL import Image

from guard.testing.tiny import BENIGN, PICTURE, VIOLENT
from guard_app.moderate.tab import STORAGE_KEY

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "visitor"
SIZES = {"desktop": (1366, 768), "phone": (390, 844)}
ACCOUNTS = {"alice": "a-secret"}
WAIT = 120_000  # ms: a generous ceiling on readiness, never a sleep


@pytest.fixture(scope="module")
def served(guards, tiny_dirs, tmp_path_factory):
    with serving_reviewers(guards, tmp_path_factory.mktemp("visitor"), ACCOUNTS) as served:
        yield served


def open_page(browser, url: str, size: str):
    width, height = SIZES[size]
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.goto(url)
    page.locator("#gl-text textarea").wait_for(timeout=WAIT)
    return context, page


def box(page, selector: str) -> dict:
    found = page.locator(selector).first.bounding_box()
    assert found is not None, f"{selector} is not laid out"
    return found


def in_first_screen(page, selector: str) -> bool:
    """Inside the viewport without scrolling (the page is at its top)."""
    assert page.evaluate("window.scrollY") == 0
    found = box(page, selector)
    return found["y"] >= 0 and found["y"] + found["height"] <= page.viewport_size["height"]


def in_view(page, selector: str) -> bool:
    found = box(page, selector)
    return found["y"] >= 0 and found["y"] + found["height"] <= page.viewport_size["height"]


def turns_shown(page, n: int) -> None:
    page.get_by_text(f"{n} turn{'s' if n != 1 else ''} ·").wait_for(timeout=WAIT)
    page.wait_for_function(f"document.querySelectorAll('.gl-role').length === {n}",
                           timeout=WAIT)


def top_tabs(page) -> list[str]:
    """The page's tabs that are shown (on a phone some sit in the "More tabs" menu): Gradio
    lists exactly those in its measuring row, the first tab bar of the page."""
    return page.evaluate("() => [...document.querySelector('.tab-wrapper .tab-container')"
                         ".querySelectorAll('button')].map((b) => b.textContent.trim())")


def run_and_read(page) -> str:
    """Run both guards and wait until the verdict is inside the viewport; its words."""
    page.locator("#gl-run").click()
    verdict = page.locator("#gl-llama-guard .gl-verdict")
    verdict.wait_for(timeout=WAIT)
    page.wait_for_function(
        "() => { const r = document.querySelector('#gl-llama-guard .gl-verdict')"
        ".getBoundingClientRect(); return r.top >= 0 && r.bottom <= window.innerHeight; }",
        timeout=WAIT)
    assert in_view(page, "#gl-llama-guard .gl-verdict")
    return verdict.inner_text()


def kept(page) -> str:
    """The browser's kept copy of the conversation (encrypted by the server) as it is now."""
    return page.evaluate(f"localStorage.getItem('{STORAGE_KEY}')") or ""


def kept_again(page, before: str) -> None:
    """Wait until the browser has kept a new copy (the server answered the change)."""
    page.wait_for_function("([key, before]) => (localStorage.getItem(key) || '') !== before",
                           arg=[STORAGE_KEY, before], timeout=WAIT)


def toast(page, text: str) -> None:
    page.get_by_text(text).first.wait_for(timeout=WAIT)


@pytest.mark.parametrize("size", SIZES)
def test_the_visitor_composes_runs_and_reads_in_one_screen(browser, served, tiny_dirs, size):
    url, _ = served
    context, page = open_page(browser, url, size)
    # 1. The visitor's face: no queue, no review form, no reviewers' tabs; names, no folders.
    assert top_tabs(page) == ["Moderate", "API"]
    assert not page.locator("#gl-queue").is_visible()
    assert not page.locator("#gl-review").is_visible()
    assert page.locator("#gl-reviewer").get_by_text("Reviewer? Sign in").is_visible()
    header = page.locator("#gl-banner").inner_text()
    assert "llama-guard-4-tiny" in header and str(tiny_dirs[0].parent) not in header
    assert str(tiny_dirs[0].parent) not in page.content()
    # 2. The message box (and at 1366x768 Run) in the first screen.
    assert in_first_screen(page, "#gl-text textarea")
    if size == "desktop":
        assert in_first_screen(page, "#gl-run")
    page.screenshot(path=str(ARTIFACTS / f"visitor_{size}_first_screen.png"))
    # Category descriptions by touch: the list under the categories opens with a tap.
    page.locator("#gl-legend").get_by_text("What the categories mean").click()
    page.locator("#gl-legend").get_by_text("S1").first.wait_for(timeout=WAIT)
    assert "Violent Crimes" in page.locator("#gl-legend").inner_text()
    page.evaluate("window.scrollTo(0, 0)")
    # 5. Shift+Enter is a new line; Enter adds the turn.
    text = page.locator("#gl-text textarea")
    text.fill(VIOLENT)
    text.press("End")
    text.press("Shift+Enter")
    text.press_sequentially("second line")
    assert text.input_value() == VIOLENT + "\nsecond line"
    assert page.locator(".gl-role").count() == 0  # Shift+Enter added no turn
    text.fill(VIOLENT)
    text.press("Enter")
    turns_shown(page, 1)
    # 2 and 6. After Run the verdict is in view, in words, with a harm score.
    assert run_and_read(page) == "unsafe: S1 Violent Crimes"
    card = page.locator("#gl-llama-guard").inner_text()
    assert "harm score" in card and "p_unsafe" in card
    assert "looks benign (score" in page.locator("#gl-prompt-guard .gl-verdict").inner_text()
    assert str(tiny_dirs[0].parent) not in page.content()  # the result names no folder either
    page.screenshot(path=str(ARTIFACTS / f"visitor_{size}_verdict.png"))
    # 3. A change to the categories marks the shown result out of date; undoing it unmarks it.
    assert not page.locator("#gl-stale").is_visible()
    page.locator("#gl-categories label", has_text="S2 Non-Violent Crimes").click()
    page.locator("#gl-stale").wait_for(timeout=WAIT)
    page.locator("#gl-stale").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / f"visitor_{size}_out_of_date.png"))
    page.locator("#gl-categories label", has_text="S2 Non-Violent Crimes").click()
    page.locator("#gl-stale").wait_for(state="detached", timeout=WAIT)
    # ... and so does a change to the conversation (the next turn is the assistant's).
    text.fill("I can't help with that.")
    text.press("Enter")
    turns_shown(page, 2)
    page.locator("#gl-stale").wait_for(timeout=WAIT)
    context.close()


def test_a_refusal_leaves_the_composer_working_and_work_survives_a_reload(browser, served,
                                                                          tmp_path):
    url, _ = served
    context, page = open_page(browser, url, "desktop")
    text = page.locator("#gl-text textarea")
    # 5. An empty message: a message, and no field becomes an "Error" badge or locks.
    page.locator("#gl-add").click()
    toast(page, "The message is empty")
    assert text.is_editable() and page.locator("#gl-role input").first.is_enabled()
    assert page.locator("#gl-text, #gl-role").get_by_text("Error", exact=True).count() == 0
    # A file that is no picture: said beside the composer, gone from the drop zone, and the
    # turn added after it says it went in without it.
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"not a picture at all")
    page.locator("#gl-upload input[type=file]").set_input_files(str(fake))
    page.locator("#gl-refused-image").wait_for(timeout=WAIT)
    page.wait_for_function("document.querySelectorAll('#gl-upload img').length === 0",
                           timeout=WAIT)
    text.fill(BENIGN)
    text.press("Enter")
    turns_shown(page, 1)
    toast(page, "added without the image that was refused")
    page.locator("#gl-refused-image").wait_for(state="detached", timeout=WAIT)
    # A long turn is folded, with "show all".
    page.locator("#gl-role").get_by_text("assistant").click()
    text.fill("bake " * 4_000)
    page.locator("#gl-add").click()
    turns_shown(page, 2)
    fold = page.locator(".gl-fold").first
    assert fold.bounding_box()["height"] < 400
    assert "show all (19,999 characters)" in fold.inner_text()  # stripped of its last space
    fold.locator("summary").click()
    page.wait_for_function("document.querySelector('.gl-fold').open === true", timeout=WAIT)
    # A picture that fits the browser's kept copy.
    picture = tmp_path / "red.png"
    Image.new("RGB", (16, 16), (220, 20, 20)).save(picture)
    page.locator("#gl-upload input[type=file]").set_input_files(str(picture))
    page.wait_for_function("document.querySelectorAll('.gl-thumb img').length === 1",
                           timeout=WAIT)
    text.fill(PICTURE)
    page.locator("#gl-add").click()
    turns_shown(page, 3)
    # 4. The conversation, its picture and the settings survive a reload (once the browser
    # has kept them).
    before = kept(page)
    page.locator("#gl-categories label", has_text="S3 Sex-Related Crimes").click()
    kept_again(page, before)
    page.reload()
    page.locator("#gl-text textarea").wait_for(timeout=WAIT)
    turns_shown(page, 3)
    assert page.locator(".gl-turn-text").first.inner_text() == BENIGN
    page.wait_for_function("document.querySelectorAll('.gl-thumb img').length === 1",
                           timeout=WAIT)
    s3 = page.locator("#gl-categories label", has_text="S3 Sex-Related Crimes").locator("input")
    assert not s3.is_checked()
    page.screenshot(path=str(ARTIFACTS / "visitor_desktop_after_reload.png"))
    # ... and "Clear conversation" clears the kept copy too.
    before = kept(page)
    page.locator("#gl-clear").click()
    turns_shown(page, 0)
    kept_again(page, before)
    page.reload()
    page.locator("#gl-text textarea").wait_for(timeout=WAIT)
    page.get_by_text("0 turns ·").wait_for(timeout=WAIT)
    assert page.locator(".gl-role").count() == 0
    # 6. The API tab shows the address the page is served from.
    page.get_by_role("tab", name="API", exact=True).click()
    help_text = page.locator("#gl-api-help")
    page.wait_for_function("(u) => document.querySelector('#gl-api-help').innerText.includes(u)",
                           arg=url, timeout=WAIT)
    if ":7860/" not in url:
        assert "127.0.0.1:7860" not in help_text.inner_text()
    context.close()


@pytest.mark.parametrize("size", SIZES)
def test_a_reviewer_signs_in_and_the_workbench_appears_without_a_reload(browser, served, size):
    url, _ = served
    context, page = open_page(browser, url, size)
    assert top_tabs(page) == ["Moderate", "API"]
    page.locator("#gl-reviewer").get_by_text("Reviewer? Sign in").click()
    page.locator("#gl-reviewer-name input").fill("alice")
    page.locator("#gl-reviewer-password input").fill(ACCOUNTS["alice"])
    page.locator("#gl-sign-in").click()
    page.locator("#gl-queue").wait_for(timeout=WAIT)  # no reload: the same page
    assert top_tabs(page) == ["Moderate", "Labeled examples", "Batch evaluation", "Tune", "API"]
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / f"reviewer_{size}_signed_in.png"))
    page.get_by_role("button", name="Harmful request", exact=True).click()
    turns_shown(page, 1)
    assert run_and_read(page) == "unsafe: S1 Violent Crimes"
    review = page.locator("#gl-review")
    review.wait_for(timeout=WAIT)
    page.screenshot(path=str(ARTIFACTS / f"reviewer_{size}_verdict.png"))
    # 3. A review of an out-of-date result is refused, saying so; of a current one, saved.
    page.locator("#gl-categories label", has_text="S2 Non-Violent Crimes").click()
    page.locator("#gl-stale").wait_for(timeout=WAIT)
    review.locator("#gl-review-right").get_by_text("Right").click()
    page.wait_for_function("[...document.querySelectorAll('#gl-review-label input')]"
                           ".some((i) => i.checked)", timeout=WAIT)
    page.locator("#gl-save-label").click()
    toast(page, "The result shown is out of date")
    page.locator("#gl-categories label", has_text="S2 Non-Violent Crimes").click()
    page.locator("#gl-stale").wait_for(state="detached", timeout=WAIT)
    page.locator("#gl-save-label").click()
    page.locator("#gl-review-status").get_by_text("Saved: example").wait_for(timeout=WAIT)
    # Signing out takes the workbench away again, still without a reload.
    sign_out = page.locator("#gl-reviewer").get_by_role("button", name="Sign out", exact=True)
    if not sign_out.is_visible():  # the panel folds under the reviewer's name once signed in
        page.locator("#gl-reviewer").get_by_text("Signed in as alice").first.click()
    sign_out.click()
    page.locator("#gl-queue").wait_for(state="hidden", timeout=WAIT)
    assert top_tabs(page) == ["Moderate", "API"]
    context.close()

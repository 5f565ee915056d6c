"""The page in a real browser: Debian's chromium driven by Playwright (never `playwright install`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import launch_app

from guard.testing.tiny import BENIGN, PICTURE
from guard_app.moderate.examples import write_swatches

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = '<img src=x onerror="window.__xss = 1; alert(2)">'


@pytest.fixture(scope="module")
def url(guards, tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    demo, address = launch_app(guards, folder)
    yield address
    demo.close()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    swatches = write_swatches(folder / "src")
    paths = {}
    for name in ("red", "blue"):
        paths[name] = folder / f"{name}.png"
        shutil.copy(swatches[name], paths[name])
    return paths


@pytest.fixture
def page(browser, url):
    page = browser.new_page(viewport={"width": 1360, "height": 1500})
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(url)
    page.wait_for_selector("#gl-add")
    yield page
    page.close()


def add_turn(page, text: str, *images: Path) -> None:
    turns = page.locator(".gl-role").count()
    page.locator("#gl-text textarea").fill(text)
    for image in images:
        attach(page, image)
    page.locator("#gl-add").click()
    settled(page, turns + 1)


def settled(page, turns: int) -> None:
    """Wait until the re-rendered turn list shows exactly `turns` turns."""
    page.get_by_text(f"{turns} turn{'s' if turns != 1 else ''} ·").wait_for()
    page.wait_for_function(f"document.querySelectorAll('.gl-role').length === {turns}")


def attach(page, image: Path) -> None:
    shown = page.locator(".gl-thumb img").count()
    page.locator("#gl-upload input[type=file]").set_input_files(str(image))
    page.wait_for_function(f"document.querySelectorAll('.gl-thumb img').length > {shown}")


def test_compose_untick_run_and_read_the_verdict(page, pictures):
    add_turn(page, BENIGN)
    assert page.locator("#gl-text textarea").input_value() == ""
    add_turn(page, "Mix flour, water and starter.")  # the role switched to assistant by itself
    add_turn(page, PICTURE, pictures["red"])
    assert page.locator(".gl-role").all_inner_texts() == ["1. User", "2. Assistant", "3. User"]
    assert "1 of 5 images" in page.locator(".gl-summary").inner_text()
    # With an image in the conversation S14 is greyed out and explained.
    s14 = page.locator("#gl-categories label", has_text="S14")
    assert "off while the conversation has images" in s14.inner_text()
    assert "text only" in s14.get_attribute("title")
    assert "Non-violent crimes" in page.locator(
        "#gl-categories label", has_text="S2 Non-Violent Crimes").get_attribute("title").capitalize()
    for name in ("S2 Non-Violent Crimes", "S3 Sex-Related Crimes"):
        page.locator("#gl-categories label", has_text=name).click()
    page.locator("#gl-run").click()
    card = page.locator("#gl-llama-guard")
    card.wait_for(timeout=120_000)
    assert card.locator(".gl-verdict").get_attribute("data-verdict") == "unsafe"
    assert "S1 Violent Crimes" in card.locator(".gl-cats").inner_text()
    assert float(card.locator(".gl-p-unsafe").inner_text()) > 0.5
    scores = page.locator("#gl-prompt-guard .gl-pg-score")
    assert scores.count() == 2  # the two user turns
    assert all(float(scores.nth(i).inner_text()) < 0.5 for i in range(2))
    page.get_by_text("The prompt Llama Guard saw").click()
    prompt = page.locator(".cm-content").first.inner_text()
    assert "S1: Violent Crimes." in prompt and "S2: Non-Violent Crimes." not in prompt
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#gl-results").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "app_results.png"), full_page=True)


def test_a_sixth_image_is_refused(page, pictures):
    page.get_by_role("button", name="Conversation with an image").click()
    page.wait_for_function("document.querySelectorAll('.gl-thumb img').length == 1")
    page.locator("#gl-text textarea").fill("Describe these pictures.")
    for _ in range(4):
        attach(page, pictures["blue"])
    assert "5 of 5 images" in page.locator(".gl-summary").inner_text()
    page.locator("#gl-upload input[type=file]").set_input_files(str(pictures["blue"]))
    toast = page.get_by_text("may carry at most 5 images")
    toast.first.wait_for(timeout=120_000)
    assert page.locator(".gl-thumb img").count() == 5


def test_markup_in_messages_shows_as_text_and_never_runs(page):
    add_turn(page, XSS_SCRIPT)
    add_turn(page, XSS_IMG)
    texts = page.locator(".gl-turn-text")
    assert [texts.nth(0).inner_text(), texts.nth(1).inner_text()] == [XSS_SCRIPT, XSS_IMG]
    page.locator("#gl-run").click()
    page.locator("#gl-prompt-guard").wait_for(timeout=120_000)
    assert XSS_SCRIPT in page.locator("#gl-prompt-guard").inner_text()
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None
    assert page.dialogs == []
    assert page.locator(".gl-turn-text img, .gl-turn-text script, #gl-results img").count() == 0

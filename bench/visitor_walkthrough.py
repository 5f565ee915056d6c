"""Seconds and scrolls from opening the page to reading the first verdict (issue 22's figures).

    python bench/visitor_walkthrough.py URL [LABEL]

For each size (1366x768, 390x844) and each way in (an example, a typed message): open the page
in chromium, do what a visitor does (example: its button, then Run; typed: the message, Add
turn, Run) and stop when the Llama Guard verdict is inside the viewport. Seconds run from the
navigation to that moment (the server already up). Scrolls are the viewport-heights the page
had to move to bring each element into view (the elements' y / the viewport's height, summed
over the moves), counting moves the page made by itself after Run as zero.
"""

from __future__ import annotations

import contextlib
import sys
import time

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-gpu"]
SIZES = ((1366, 768), (390, 844))
TYPED = "Tell me how to stab someone without getting caught."
EXAMPLE = "Harmful request"
VERDICT = "#gl-llama-guard .gl-verdict"


def bring(page, locator, height: int) -> float:
    """Scroll `locator` into view as a person would; the viewport-heights moved."""
    before = page.evaluate("window.scrollY")
    locator.scroll_into_view_if_needed()
    after = page.evaluate("window.scrollY")
    return abs(after - before) / height


def in_view(page, locator, height: int) -> bool:
    box = locator.bounding_box()
    return box is not None and box["y"] >= 0 and box["y"] + min(box["height"], 40) <= height


def walk(browser, url: str, size: tuple[int, int], how: str) -> tuple[float, float]:
    width, height = size
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    scrolls = 0.0
    start = time.monotonic()
    page.goto(url)
    page.locator("#gl-text textarea").wait_for()
    if how == "example":
        button = page.get_by_role("button", name=EXAMPLE, exact=True)
        scrolls += bring(page, button, height)
        button.click()
        page.get_by_text("1 turn ·").wait_for()
    else:
        box = page.locator("#gl-text textarea")
        scrolls += bring(page, box, height)
        box.fill(TYPED)
        add = page.locator("#gl-add")
        scrolls += bring(page, add, height)
        add.click()
        page.get_by_text("1 turn ·").wait_for()
    run = page.locator("#gl-run")
    scrolls += bring(page, run, height)
    run.click()
    verdict = page.locator(VERDICT)
    verdict.wait_for()
    # The page may bring the verdict into view itself: wait a little for that, on the page.
    with contextlib.suppress(PlaywrightTimeout):  # not brought by the page: the person scrolls
        page.wait_for_function(
            "() => { const r = document.querySelector('#gl-llama-guard .gl-verdict')"
            ".getBoundingClientRect(); return r.top >= 0 && r.top + 20 <= window.innerHeight; }",
            timeout=3000)
    if not in_view(page, verdict, height):
        scrolls += bring(page, verdict, height)
    seconds = time.monotonic() - start
    context.close()
    return seconds, scrolls


def main() -> None:
    url, label = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        walk(browser, url, SIZES[0], "example")  # warm the server's first run
        for size in SIZES:
            for how in ("example", "typed"):
                seconds, scrolls = walk(browser, url, size, how)
                print(f"{label} {size[0]}x{size[1]} {how}: {seconds:.1f} s, "
                      f"{scrolls:.1f} screens scrolled", flush=True)
        browser.close()


if __name__ == "__main__":
    main()

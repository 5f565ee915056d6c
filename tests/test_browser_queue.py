"""A review queue worked from the keyboard alone, by two reviewers, blind (issue 11).

A batch run of the tiny model over ten requests it calls safe, labelled unsafe: ten false
negatives. Their queue (overlap 2) is labelled by Ana with the keyboard only (Tab to a field,
type, Alt and Ctrl shortcuts; no click), then by Bob in another browser, who never sees Ana's
labels. The seconds and keystrokes per item go to artifacts/queue_keyboard.json.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from helpers import launch_app

from guard.core.datasets import read_dataset
from guard.eval.runner import evaluate_dataset
from labels import Store, queues
from labels.runs import Runs

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
ITEMS = 10
CANDIDATES = [f"{ask} a {animal}?" for ask in ("What does one feed", "How long does one keep",
                                               "Where does one buy", "How do I draw")
              for animal in ("cat", "dog", "fox", "owl", "bear", "mouse", "frog", "goat",
                             "duck", "seal")]


def misses(guards) -> list[str]:
    """Ten requests the tiny model calls safe: labelled unsafe, they are its false negatives."""
    from guard.core.conversation import Conversation, user

    verdicts = guards.llama_guard.classify_batch([Conversation.build([user(c)])
                                                  for c in CANDIDATES])
    safe = [c for c, v in zip(CANDIDATES, verdicts, strict=True) if not v.unsafe]
    assert len(safe) >= ITEMS, "the tiny model flags too many harmless requests"
    return safe[:ITEMS]


@pytest.fixture(scope="module")
def served(guards, tmp_path_factory):
    folder = tmp_path_factory.mktemp("queue")
    data = folder / "misses.csv"
    data.write_text("id,prompt,label\n" + "".join(
        f"m{i},{p},unsafe\n" for i, p in enumerate(misses(guards))))
    store = Store(folder / "labels.db")
    runs = Runs(store)
    evaluate_dataset(read_dataset(data, "csv"), guards, runs, name="stories")
    fill = queues.create_from_run(store, "misses", "stories", "false-negatives", overlap=2)
    assert fill.added == ITEMS, fill.summary
    demo, url = launch_app(guards, folder, store=store)
    yield url, store
    demo.close()
    store.close()


class Keys:
    """The keyboard, counted."""

    def __init__(self, page):
        self.page, self.count = page, 0

    def press(self, key: str) -> None:
        self.page.keyboard.press(key)
        self.count += 1

    def type(self, text: str) -> None:
        self.page.keyboard.type(text)
        self.count += len(text)

    def tab_to(self, selector: str, limit: int = 120) -> None:
        """Press Tab until the focus is inside `selector` (the keyboard way to reach a field)."""
        for _ in range(limit):
            if self.page.evaluate("(s) => !!document.activeElement.closest(s)", selector):
                return
            self.press("Tab")
        pytest.fail(f"Tab never reached {selector}")


def progress(page) -> str:
    return page.locator("#gl-queue-progress").inner_text()


def wait_progress(page, before: str) -> str:
    deadline = time.monotonic() + 180  # generous: a loaded machine answers slowly
    while time.monotonic() < deadline:
        now = progress(page)
        if now != before and re.fullmatch(r"\d+ of \d+ labelled, \d+ skipped", now):
            return now
        page.wait_for_timeout(50)
    pytest.fail(f"the queue did not move on from {before!r}")


def work_queue(browser, url: str, reviewer: str, decide) -> dict:
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.goto(url)
    page.wait_for_selector("#gl-queue-start")
    keys = Keys(page)
    keys.tab_to("#gl-reviewer-name")
    keys.type(reviewer)
    keys.tab_to("#gl-queue-name")
    keys.type("misses")
    keys.press("Enter")
    before = progress(page)
    keys.press("Alt+KeyQ")
    shown = []
    started, setup_keys = time.perf_counter(), keys.count
    for n in range(ITEMS):
        before = wait_progress(page, before) if n == 0 else before
        page.wait_for_selector("#gl-queue-item")
        shown.append(page.locator("#gl-queue").inner_text())
        for box in ("#gl-queue-answer", "#gl-queue-submit"):  # both in view, no scrolling
            rect = page.locator(box).bounding_box()
            in_view = rect is not None and rect["y"] >= 0 and rect["y"] + rect["height"] <= 768
            if not in_view:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "queue_not_in_view.png"))
            assert in_view, (box, rect)
        for key in decide(n):
            keys.press(key)
        keys.press("Control+Enter")
        before = wait_progress(page, before)
    seconds = time.perf_counter() - started
    assert progress(page).startswith(f"{ITEMS} of {ITEMS} labelled")
    assert "Nothing left for you" in page.locator("#gl-queue-status").inner_text()
    page.close()
    return {"reviewer": reviewer, "seconds_per_item": round(seconds / ITEMS, 3),
            "keystrokes_per_item": (keys.count - setup_keys) / ITEMS,
            "keystrokes_to_start": setup_keys, "shown": shown}


def test_two_reviewers_label_a_queue_of_misses_blind_with_the_keyboard(browser, served):
    url, store = served
    ana = work_queue(browser, url, "ana", lambda n: ["Alt+KeyU", "Alt+Digit1"])
    bob = work_queue(browser, url, "bob",
                     lambda n: ["Alt+KeyF"] if n % 2 else ["Alt+KeyU", "Alt+Digit1"])
    # Blind: nothing Ana gave is on Bob's screen.
    assert not any("ana" in text for text in bob["shown"])
    assert all("Model said safe" in text for text in ana["shown"] + bob["shown"])
    examples = list(store.iter_examples())
    assert len(examples) == ITEMS
    labels = {e.id: {lb.reviewer: (lb.label, lb.categories) for lb in e.labels}
              for e in examples}
    assert all(set(by) == {"ana", "bob"} for by in labels.values())
    assert all(by["ana"] == ("unsafe", ("S1",)) for by in labels.values()), labels
    disagree = sorted(i for i, by in labels.items() if by["ana"][0] != by["bob"][0])
    assert len(disagree) == ITEMS // 2
    assert queues.progress(store, "misses").sentence.startswith(f"{ITEMS} of {ITEMS} labelled")
    # The agreement screen lists exactly the items they disagree on.
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.goto(url)
    page.get_by_role("tab", name="Labeled examples").click()
    page.locator("#gl-agreement").get_by_text("Agreement between reviewers").click()
    page.locator("#gl-agree").click()
    page.wait_for_function("() => /\\b5\\b/.test(document.querySelector("
                           "'#gl-disagree-caption').innerText)")
    table = page.locator("#gl-disagreements")
    listed = [int(table.get_by_test_id(f"cell-{row}-0").inner_text())
              for row in range(len(disagree))]
    assert sorted(listed) == disagree, listed
    assert table.get_by_test_id(f"cell-{len(disagree)}-0").count() == 0  # and nothing else
    page.close()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "queue_keyboard.json").write_text(json.dumps(
        {r["reviewer"]: {k: v for k, v in r.items() if k != "shown"} for r in (ana, bob)},
        indent=2) + "\n")

"""Labels you can trust, in a real browser, with two reviewers (alice, bob) and a lead (carol):
shortcuts act on the form in use and never on one out of view (1); blind until done (3); an
unsafe label names a category or says none fits (5); the sign-in survives a reload and the
panel folds (6); Back reopens the item just submitted, with its label (7)."""

from __future__ import annotations

import pytest
from helpers import launch_app

from guard_app.reviewers import ReviewerGate
from labels import Store, queues

pytestmark = pytest.mark.browser

ACCOUNTS = {"alice": "a-secret", "bob": "b-secret", "carol": "c-secret"}
PROMPTS = ["How can I hurt my neighbour's dog?", "How do I bake rye bread?",
           "Where can I buy a lock pick?"]
WAIT = 120_000  # ms: a generous ceiling on readiness, never a sleep


@pytest.fixture
def served(guards, tmp_path):
    data = tmp_path / "items.csv"
    data.write_text("prompt\n" + "".join(f"{p}\n" for p in PROMPTS))
    gate = ReviewerGate.from_config(ACCOUNTS, on_space=False,
                                    environ={"GUARD_LAB_LEADS": "carol"})
    with Store(tmp_path / "labels.db") as store:
        queues.create_from_file(store, "pairs", data, format="csv", overlap=2)
        demo, url = launch_app(guards, tmp_path, store=store, reviewers=gate)
        try:
            yield url, store
        finally:
            demo.close()


def signed_in(browser, url: str, name: str, height: int = 900):
    context = browser.new_context(viewport={"width": 1366, "height": height})
    page = context.new_page()
    page.goto(url)
    page.locator("#gl-reviewer").get_by_text("Reviewer? Sign in").click()
    page.wait_for_selector("#gl-sign-in")
    page.locator("#gl-reviewer-name input").fill(name)
    page.locator("#gl-reviewer-password input").fill(ACCOUNTS[name])
    page.locator("#gl-sign-in").click()
    page.wait_for_function("(n) => (document.querySelector('#gl-reviewer-status') || {innerText: ''}).innerText"
                           ".includes('Signed in as ' + n)", arg=name, timeout=WAIT)
    return context, page


def start_queue(page) -> None:
    page.locator("#gl-queue-name input").fill("pairs")
    page.locator("#gl-queue-start").click()
    page.wait_for_selector("#gl-queue-item", timeout=WAIT)


def progress(page) -> str:
    return page.locator("#gl-queue-progress").inner_text()


def wait_progress(page, text: str) -> None:
    page.wait_for_function("(t) => (document.querySelector('#gl-queue-progress') || {innerText: ''}).innerText"
                           ".startsWith(t)", arg=text, timeout=WAIT)


def ticked(page, form: str) -> list[str]:
    return page.evaluate(
        "(f) => [...document.querySelectorAll(f + ' input:checked')].map((i) => "
        "i.closest('label').innerText.trim().split(' ')[0])", form)


def test_shortcuts_act_on_the_form_in_use_never_one_out_of_view(browser, served):
    url, store = served
    context, page = signed_in(browser, url, "alice", height=768)
    try:
        start_queue(page)  # the queue form opens at the top and takes the focus
        page.get_by_role("button", name="Harmful request", exact=True).click()
        page.wait_for_selector(".gl-role")
        page.keyboard.press("Alt+r")
        page.wait_for_selector("#gl-review", state="visible", timeout=WAIT)
        page.locator("#gl-review-label").scroll_into_view_if_needed()
        page.evaluate("() => document.querySelector('#gl-review-label')"
                      ".scrollIntoView({block: 'center'})")
        assert page.evaluate("() => document.querySelector('#gl-queue-label')"
                             ".getBoundingClientRect().bottom < 0")  # the queue: out of view
        # The keys, with the queue form open above and out of view (no "model was":
        # whether the tiny model was right does not matter here).
        for key in ("Alt+u", "Alt+1", "Alt+s"):
            page.keyboard.press(key)
        page.wait_for_selector("#gl-review-status", timeout=WAIT)
        assert "by alice" in page.locator("#gl-review-status").inner_text()
        [saved] = [lb for e in store.iter_examples() for lb in e.labels]
        assert (saved.reviewer, saved.label, saved.categories) == ("alice", "unsafe", ("S1",))
        # The queue form, out of view, is exactly as it was: nothing chosen, nothing ticked.
        assert ticked(page, "#gl-queue") == []
        assert progress(page).startswith("0 of 3 labelled")
    finally:
        context.close()
    # Both forms on a tall screen and the focus in neither: nothing changes, a hint says why.
    context, page = signed_in(browser, url, "bob", height=4400)
    try:
        start_queue(page)
        page.get_by_role("button", name="Harmful request", exact=True).click()
        page.wait_for_selector(".gl-role")
        page.keyboard.press("Alt+r")
        page.wait_for_selector("#gl-review", state="visible", timeout=WAIT)
        assert page.evaluate("() => ['#gl-queue-label', '#gl-review-label'].every((s) => "
                             "document.querySelector(s).getBoundingClientRect().bottom < "
                             "window.innerHeight)")  # both on the screen
        page.evaluate("() => document.activeElement && document.activeElement.blur()")
        page.keyboard.press("Alt+u")
        page.wait_for_selector("#gl-shortcut-hint", state="visible", timeout=WAIT)
        assert "2 label forms are on the screen" in page.locator("#gl-shortcut-hint").inner_text()
        assert ticked(page, "#gl-queue") == [] and ticked(page, "#gl-review") == []
        # The focus decides: in the Review form, Alt+U picks its label only.
        page.locator("#gl-review-label input").first.focus()
        page.keyboard.press("Alt+u")
        page.wait_for_function("() => document.querySelector('#gl-review-label "
                               "input[value=unsafe]').checked")
        assert ticked(page, "#gl-queue") == []
    finally:
        context.close()


def test_two_reviewers_and_a_lead_blind_none_fits_back_and_reload(browser, served):
    url, store = served
    alice_context, alice = signed_in(browser, url, "alice")
    try:
        # 6: a reload keeps the sign-in (the browser holds the token) and the panel folds.
        folded = "Signed in as alice (sign out inside)"
        alice.locator("#gl-reviewer").get_by_text(folded).wait_for(timeout=WAIT)
        alice.reload()
        alice.locator("#gl-reviewer").get_by_text(folded).wait_for(timeout=WAIT)
        assert not alice.locator("#gl-reviewer-password").is_visible()  # folded away
        start_queue(alice)
        # 5: unsafe with no category is refused; "none fits" is stored as such.
        alice.keyboard.press("Alt+u")
        alice.locator("#gl-queue-note textarea").fill("private: sounds like cruelty")
        alice.keyboard.press("Control+Enter")
        alice.get_by_text("tick at least one category").first.wait_for(timeout=WAIT)
        assert progress(alice).startswith("0 of 3 labelled")
        alice.locator("#gl-queue-none-fits input").check()
        alice.keyboard.press("Control+Enter")
        wait_progress(alice, "1 of 3 labelled")
        first = next(store.iter_examples())
        [mine] = first.labels
        assert (mine.label, mine.categories, mine.none_fits) == ("unsafe", (), True)
        # 7: Back (Alt+B) reopens the item just submitted, with the label, to change it.
        alice.locator("#gl-queue-label input").first.focus()
        alice.keyboard.press("Alt+f")
        alice.keyboard.press("Control+Enter")
        wait_progress(alice, "2 of 3 labelled")
        alice.locator("#gl-queue-label input").first.focus()
        alice.keyboard.press("Alt+b")
        alice.wait_for_function("() => (document.querySelector('#gl-queue-status') || {innerText: ''}).innerText"
                                ".includes('Back to item 2')", timeout=WAIT)
        assert PROMPTS[1] in alice.locator("#gl-queue-item").inner_text()
        assert alice.evaluate("() => document.querySelector('#gl-queue-label "
                              "input[value=safe]').checked")
        alice.keyboard.press("Alt+u")
        alice.keyboard.press("Alt+2")
        alice.keyboard.press("Control+Enter")
        alice.wait_for_function("(t) => (document.querySelector('#gl-queue-item') || {innerText: ''}).innerText"
                                ".includes(t)", arg=PROMPTS[2], timeout=WAIT)
        second = [e for e in store.iter_examples() if e.id != first.id][0]
        assert [(lb.label, lb.categories) for lb in second.labels] == [("unsafe", ("S2",))]
        assert [e.action for e in store.label_history(second.id)] == ["create", "edit"]
        assert progress(alice).startswith("2 of 3 labelled")
    finally:
        alice_context.close()

    # 3: Bob holds the very item Alice labelled: no screen shows him her label or note.
    bob_context, bob = signed_in(browser, url, "bob")
    try:
        bob.get_by_role("tab", name="Labeled examples").click()
        search = bob.locator("#gl-labels-search input")
        search.fill("cruelty")
        search.press("Enter")
        bob.wait_for_function("() => /No examples match/.test(document.querySelector("
                              "'#gl-labels-caption').innerText)", timeout=WAIT)
        bob.locator("#gl-open-id input").fill(str(first.id))
        bob.locator("#gl-open-button").click()
        bob.wait_for_selector("#gl-open-answer", timeout=WAIT)
        opened = bob.locator("#gl-open").inner_text()
        assert "alice" not in opened and "cruelty" not in opened
    finally:
        bob_context.close()
    # The lead sees everything.
    carol_context, carol = signed_in(browser, url, "carol")
    try:
        carol.get_by_role("tab", name="Labeled examples").click()
        carol.locator("#gl-open-id input").fill(str(first.id))
        carol.locator("#gl-open-button").click()
        carol.wait_for_selector("#gl-open-answer", timeout=WAIT)
        carol.wait_for_function("() => (document.querySelector('#gl-open-labels') || "
                                "{innerText: ''}).innerText.includes('alice')", timeout=WAIT)
        assert "cruelty" in carol.locator("#gl-open").inner_text()
    finally:
        carol_context.close()

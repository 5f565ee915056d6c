"""The Moderate tab's policy picker in a real browser: picking a policy sets the page, a run
shows the model's answer and the policy's decision apart, and "Save as policy" saves a version."""

from __future__ import annotations

import json

import pytest
from helpers import launch_app

from guard.core.datasets import read_dataset
from guard.core.policy import Policy
from guard.eval.runner import evaluate_dataset
from guard.testing.tiny import BENIGN, VIOLENT
from labels import policies
from labels.runs import Runs
from labels.store import Store

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def served(guards, tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser-policy")
    store = Store(folder / "labels.db")
    # Everything is unsafe at threshold 0: the tiny model answers "safe" to BENIGN, so the
    # model's answer and this policy's decision differ.
    policies.save(store, Policy.from_json({"name": "zero", "excluded": ["S2", "S3"],
                                           "threshold": 0.0}))
    data = folder / "rows.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "prompt": p, "label": label}) + "\n"
                            for i, (p, label) in enumerate([(BENIGN, "safe"),
                                                            (VIOLENT, "unsafe")])))
    evaluate_dataset(read_dataset(data, "jsonl"), guards, Runs(store), name="stored")
    demo, url = launch_app(guards, folder, store=store, data_dir=folder / "no-data")
    yield url, store
    demo.close()
    store.close()


def test_pick_run_read_the_decision_and_save_as_policy(browser, served):
    expect = pytest.importorskip("playwright.sync_api").expect
    url, store = served
    page = browser.new_page(viewport={"width": 1360, "height": 1600})
    page.goto(url)
    page.wait_for_selector("#gl-add")
    page.locator("#gl-policy input").click()
    page.get_by_role("option", name="zero@1").click()
    s2 = page.locator('#gl-categories input[name="S2"]')
    expect(s2).not_to_be_checked(timeout=30_000)  # the pick set the page
    assert page.locator('#gl-categories input[name="S1"]').is_checked()
    page.locator("#gl-text textarea").fill(BENIGN)
    page.locator("#gl-add").click()
    page.get_by_text("1 turn ·").wait_for()
    page.locator("#gl-run").click()
    decision = page.locator("#gl-decision")
    decision.wait_for(timeout=120_000)
    text = decision.inner_text()
    assert "Model answer: SAFE" in text
    assert "Decision of policy zero@1: UNSAFE" in text
    assert "text says 'safe', but p_unsafe" in text and "threshold 0 of policy zero@1" in text

    page.get_by_text("Save as policy").click()
    page.locator("#gl-policy-name textarea, #gl-policy-name input").first.fill("zero-copy")
    page.locator("#gl-policy-save").click()
    page.locator("#gl-policy-status").wait_for(timeout=60_000)
    assert page.locator("#gl-policy-status").inner_text() == "Saved zero-copy@1."
    saved = policies.get(store, "zero-copy")
    assert (saved.excluded, saved.threshold) == (("S2", "S3"), 0.0)
    page.close()


def test_enter_applies_a_typed_threshold_with_its_digits(browser, served):
    expect = pytest.importorskip("playwright.sync_api").expect
    url, _ = served
    page = browser.new_page(viewport={"width": 1360, "height": 1600})
    page.goto(url)
    page.wait_for_selector("#gl-add")
    page.get_by_role("tab", name="Batch evaluation").click()
    page.locator("#gl-eval-run-a input").click()
    page.get_by_role("option", name="stored").click()
    threshold = page.locator("#gl-eval-threshold input[type=number]")
    expect(threshold).to_have_value("0.5", timeout=60_000)
    page.locator("#gl-eval-typed textarea, #gl-eval-typed input").first.fill("0.003")
    page.keyboard.press("Enter")  # no leaving the box: Enter alone applies it
    expect(threshold).to_have_value("0.003", timeout=60_000)
    expect(page.locator("#gl-eval-report")).to_contain_text("0.003", timeout=60_000)
    page.close()


def test_the_batch_form_survives_a_reload_and_the_status_names_run_a(browser, served):
    """gr.BrowserState keeps the form in this browser. Each edit is stored before the next is
    made (the stored, encrypted value changes), so the reload reads every one of them."""
    expect = pytest.importorskip("playwright.sync_api").expect
    url, _ = served
    key = "guard-lab-batch-evaluation-form"
    page = browser.new_page(viewport={"width": 1360, "height": 1600})

    def stored_after(edit) -> None:
        before = page.evaluate(f"() => localStorage.getItem('{key}')")
        edit()
        page.wait_for_function(f"(v) => localStorage.getItem('{key}') !== v", arg=before,
                               timeout=60_000)

    def pick(elem_id: str, option: str) -> None:
        page.locator(f"#{elem_id} input").click()
        page.get_by_role("option", name=option).click()

    page.goto(url)
    page.wait_for_selector("#gl-add")
    page.get_by_role("tab", name="Batch evaluation").click()
    expect(page.locator("#gl-eval-kept-note")).to_contain_text("an uploaded file is not")
    stored_after(lambda: page.locator("#gl-eval-limit input").fill("7"))
    stored_after(lambda: page.locator("#gl-eval-target input").fill("0.2"))
    stored_after(lambda: page.get_by_label("target recall (at least)").first.check())
    stored_after(lambda: pick("gl-eval-policy", "zero@1"))  # last: it also sets the form

    page.reload()
    page.wait_for_selector("#gl-add")
    page.get_by_role("tab", name="Batch evaluation").click()
    expect(page.locator("#gl-eval-limit input")).to_have_value("7", timeout=60_000)
    expect(page.locator("#gl-eval-target input")).to_have_value("0.2")
    expect(page.get_by_label("target recall (at least)").first).to_be_checked()
    expect(page.locator("#gl-eval-policy input")).to_have_value("zero@1")

    # The status line names run A, the run the report and the rows below read.
    pick("gl-eval-run-a", "stored")
    expect(page.locator("#gl-eval-status")).to_contain_text(
        "Run A: 'stored' (finished; 2 of 2 rows stored; policy none", timeout=60_000)
    page.close()

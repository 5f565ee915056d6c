"""Measure, in a real browser: Prompt Guard's stored scores against the final Prompt Guard
labels, with the card's figures checked against scikit-learn."""

from __future__ import annotations

import random

import pytest
from helpers import launch_app
from sklearn.metrics import roc_auc_score
from test_labels_helpers import example, label

from guard_app.labeled.prompt_guard_measure import HEADERS
from labels import PromptGuardInput, Store

pytestmark = pytest.mark.browser


def test_measure_gives_prompt_guard_its_card_figures_on_the_final_labels(browser, guards,
                                                                         tmp_path):
    rng = random.Random(11)
    y, s = [], []
    with Store(tmp_path / "labels.db") as store:
        for i in range(40):
            malicious = i % 4 == 0
            score = round(rng.random() * 0.7 + (0.3 if malicious else 0.0), 3)
            store.save_example(example(f"message {i}", unsafe=False, p_unsafe=0.1,
                                       scores={"0": score}),
                               label("ana", "safe", ()), [PromptGuardInput(0, malicious)])
            y.append(malicious)
            s.append(score)
        demo, url = launch_app(guards, tmp_path, store=store)
        page = browser.new_page(viewport={"width": 1360, "height": 1500})
        try:
            page.goto(url)
            page.wait_for_selector("#gl-add")
            page.locator("#gl-reviewer-name input, #gl-reviewer-name textarea").fill("ana")
            page.get_by_role("tab", name="Labeled examples").click()
            page.locator("#gl-measure").get_by_text("Measure", exact=True).first.click()
            page.locator("#gl-measure-pg-run").click()
            words = page.locator("#gl-measure-pg-words")
            words.get_by_text("Prompt Guard on").wait_for(timeout=120_000)
            table = page.locator("#gl-measure-pg-table")
            auc = table.get_by_test_id(f"cell-0-{HEADERS.index('ROC AUC')}").inner_text()
            assert auc.strip() == f"{roc_auc_score(y, s):.4f}"
            malicious = table.get_by_test_id(f"cell-0-{HEADERS.index('malicious')}").inner_text()
            assert malicious.strip() == str(sum(y))
            assert "Suggested threshold for FPR ≤ 0.01" in words.inner_text()
        finally:
            page.close()
            demo.close()

"""Batch evaluation's policies through gradio_client: a policy's category sweep over a dataset
(every variant a stored run that records its policy, resumed without judging twice), "save
this variant as a policy", and a threshold for a target FPR or recall with what it costs."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from helpers import launch_app

from guard.core.policy import Policy
from guard.eval.thresholds import show_threshold, suggest
from guard.testing.tiny import BENIGN, VIOLENT
from labels import policies
from labels.runs import Runs

ROWS = [(BENIGN, "safe"), (VIOLENT, "unsafe"), ("How do I bake bread?", "safe"),
        (VIOLENT + " Now.", "unsafe")]


@pytest.fixture(scope="module")
def served(guards, tmp_path_factory):
    from labels import Store

    folder = tmp_path_factory.mktemp("policy-eval")
    store = Store(folder / "labels.db")
    policies.save(store, Policy.from_json({"name": "narrow", "excluded": [
        f"S{i}" for i in range(3, 15)]}))  # S1 and S2 enforced: a sweep of three variants
    demo, url = launch_app(guards, folder, store=store, data_dir=folder / "no-data")
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "prompt": p, "label": label}) + "\n"
                            for i, (p, label) in enumerate(ROWS)))
    yield Client(url, verbose=False), store, data
    demo.close()
    store.close()


def sweep(client: Client, data: Path, name: str, choice: str) -> tuple:
    return client.predict("upload", handle_file(str(data)), "jsonl", name, None, 8, [], 0.5,
                          choice, True, False, "", api_name="/sweep_dataset")


def test_a_sweep_from_the_page_stores_each_variant_with_its_policy(served):
    client, store, data = served
    status, table, variant, run_a = sweep(client, data, "mine", "narrow@1")
    rows = table["data"]
    assert [r[0] for r in rows] == ["policy", "without S1", "without S2"]
    assert [r[9] for r in rows][0] == "narrow@1" and rows[1][9].startswith("narrow-no-s1@draft-")
    assert [r[10] for r in rows] == ["mine", "mine [without S1]", "mine [without S2]"]
    assert rows[0][1] == "4" and status.startswith("3 runs (narrow@1)")
    assert run_a["value"] == "mine" if isinstance(run_a, dict) else run_a == "mine"
    runs = {r.name: r for r in Runs(store).list()}
    assert runs["mine"].settings.policy == "narrow@1"
    assert runs["mine [without S1]"].settings.excluded == tuple(f"S{i}" for i in range(1, 15)
                                                                 if i != 2)
    before = {r.row_id: r.created_at for r in Runs(store).results(runs["mine"].id)}
    sweep(client, data, "mine", "narrow@1")  # again: everything is stored, nothing re-judged
    after = {r.row_id: r.created_at for r in Runs(store).results(runs["mine"].id)}
    assert after == before

    text, _ = client.predict("mine", "mine [without S1]", "", api_name="/compare_runs")
    assert "(policy narrow@1 · narrow-no-s1@draft-" in text  # Compare names both policies
    assert "policy narrow-no-s1@draft-" in text.split("Settings of B that differ")[1]

    # The page keeps the sweep's variants in its session: the same client saves one of them.
    saved, _ = client.predict("without S1", "narrow-s2-only", "", api_name="/save_variant")
    assert saved == "Saved narrow-s2-only@1."
    assert policies.get(store, "narrow-s2-only").enabled == ("S2",)


def test_saving_a_variant_before_a_sweep_is_refused(served):
    client, *_ = served
    fresh = Client(client.src, verbose=False)  # a session that has swept nothing
    with pytest.raises(Exception, match="Sweep the categories first"):
        fresh.predict("without S1", "x", "", api_name="/save_variant")


def test_a_threshold_for_a_target_says_what_it_costs(served):
    client, store, data = served
    every = [f"S{i}" for i in range(1, 15)]
    client.predict("upload", handle_file(str(data)), "jsonl", "plain", None, 8, every, 0.5,
                   None, False, False, "", api_name="/sweep_dataset")
    html, typed = client.predict("plain", "recall", 1.0, "", api_name="/suggest_threshold")
    (run,) = [r for r in Runs(store).list() if r.name == "plain"]
    results = Runs(store).results(run.id)
    expected = suggest([bool(r.gold) for r in results], [r.p_unsafe for r in results],
                       "recall", 1.0)
    assert expected.recall == 1.0
    assert escape(expected.sentence) in html and typed == show_threshold(expected.threshold)
    assert "Only 2 labelled unsafe rows: too few to trust this rate" in html
    with pytest.raises(Exception, match="from 0 to 1"):
        client.predict("plain", "fpr", 2, "", api_name="/suggest_threshold")


def test_suggestions_and_their_warnings():
    y = [True, True, False, False, False]
    s = [0.9, 0.2, 0.3, 0.1, 0.0081]
    low_fpr = suggest(y, s, "fpr", 0.0)
    assert (low_fpr.threshold, low_fpr.recall, low_fpr.fpr) == (0.9, 0.5, 0.0)
    every = suggest(y, s, "recall", 1.0)
    assert (every.threshold, every.precision, every.fpr) == (0.2, 2 / 3, 1 / 3)
    nothing = suggest([False, False], [0.5, 0.0081], "fpr", 0.0)
    assert any("recall is 0" in w for w in nothing.warnings)
    assert any("precision is 0" in w for w in nothing.warnings)
    assert [show_threshold(t) for t in (0.003, 0.0081, 0.5, 0.12345, 0.0, 1.0)] == [
        "0.003", "0.0081", "0.5", "0.1235", "0", "1"]

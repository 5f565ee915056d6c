"""Batch evaluation's Prompt Guard leftovers (issues 23 and 24), through gradio_client: a run
under a picked policy reports Prompt Guard's card figures in `/evaluate`'s JSON at the policy's
Prompt Guard threshold (a plain run at 0.9, as before), and "Make the queue" offers Prompt
Guard's false positives and negatives of the run, at a threshold that defaults to the run's
policy's (else 0.9), `/queue_from_run`'s old inputs working as before."""

from __future__ import annotations

import csv

import pytest
from gradio_client import Client, handle_file
from helpers import launch_app

from guard.core.policy import Policy
from guard.testing.tiny import PROMPT_GUARD_EXAMPLES
from guard_app.evaluate import logic as view
from labels import policies
from labels.runs import Runs

EVERY = [f"S{i}" for i in range(1, 15)]
# The tiny Prompt Guard scores its benign texts about 0.0006 and its attacks about 0.9996: at
# the policy's 0.0005 every benign text is a false positive, at 0.9 only the one labelled
# against the model ("developer_mode", marked benign here).
LOW = {"name": "pg-low", "threshold": 0.5, "prompt_guard": {"threshold": 0.0005}}
BENIGN_ROWS = {"benign_question", "benign_recipe", "harmful_but_plain", "developer_mode"}


@pytest.fixture(scope="module")
def served(guards, tmp_path_factory):
    from labels import Store

    folder = tmp_path_factory.mktemp("pg-policy-runs")
    store = Store(folder / "labels.db")
    policies.save(store, Policy.from_json(LOW))
    data = folder / "attacks.csv"
    with data.open("w", newline="") as f:
        out = csv.DictWriter(f, ["id", "prompt", "label", "attack"])
        out.writeheader()
        for name, (text, malicious) in PROMPT_GUARD_EXAMPLES.items():
            attack = bool(malicious) and name != "developer_mode"
            out.writerow({"id": name, "prompt": text,
                          "label": "unsafe" if name == "harmful_but_plain" else "safe",
                          "attack": "malicious" if attack else "benign"})
    demo, url = launch_app(guards, folder, store=store, data_dir=folder / "no-data")
    client = Client(url, verbose=False)
    for name, choice in (("plain", "(the settings below)"), ("low", "pg-low@1")):
        client.predict("upload", handle_file(str(data)), "csv", name, None, 8, EVERY, 0.5, "",
                       choice, api_name="/evaluate")
    yield client, store, demo, data
    demo.close()
    store.close()


def test_a_policy_run_reports_prompt_guard_at_the_policys_threshold(served, guards):
    client, store, _, data = served
    runs = Runs(store)
    low, plain = runs.get("low"), runs.get("plain")
    assert low.settings.policy == "pg-low@1" and plain.settings.policy == ""
    # The policy names no model this server offers: the loaded Prompt Guard, recorded.
    assert low.settings.prompt_guard_model == guards.prompt_guard.name
    # The policy run keeps each row's attack label and window scores, as a plain run does.
    stored = {r.row_id: r for r in runs.results(low.id)}
    assert {k for k, r in stored.items() if r.attack is False} == BENIGN_ROWS
    assert all(len(r.window_scores) == 1 and r.window_scores[0] == pytest.approx(
        r.p_malicious, abs=1e-5) for r in stored.values())

    # /evaluate's JSON (resumed: nothing judged again) for each run.
    shown = {}
    for name, choice in (("low", "pg-low@1"), ("plain", "(the settings below)")):
        result = client.predict("upload", handle_file(str(data)), "csv", name, None, 8, EVERY,
                                0.5, "", choice, api_name="/evaluate")
        assert result[5]["judged_now"] == 0
        shown[name] = result
    pg_low, pg_plain = (shown[k][5]["prompt_guard_attack"] for k in ("low", "plain"))
    assert pg_low is not None and pg_low["threshold"] == 0.0005
    assert pg_low["model"] == guards.prompt_guard.name
    m = pg_low["messages"]
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 4, 0, 0)  # every benign text flagged
    assert pg_low["windows"]["n"] == 6  # from the stored window scores
    assert pg_plain["threshold"] == 0.9  # a plain run: as before
    m = pg_plain["messages"]
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 0, 3)
    table = dict(shown["low"][1]["data"])
    assert table["prompt_guard_attack threshold"] == "0.0005"

    # The stored run shown again (/run_rows) reads Prompt Guard at its policy's threshold too.
    again = client.predict("low", 0.5, "all", None, None, "", api_name="/run_rows")
    assert again[5]["prompt_guard_attack"]["threshold"] == 0.0005
    assert again[5]["prompt_guard_attack"]["messages"] == pg_low["messages"]


def queued(fill) -> tuple[int, float | None]:
    """(items, the Prompt Guard threshold the queue was filled at)."""
    return fill["queue"]["items"], fill["queue"]["source"].get("prompt_guard_threshold")


def test_the_queue_offers_prompt_guards_misses_at_the_runs_policys_threshold(served):
    client, store, demo, _ = served
    offered = [v for _, v in view.QUEUE_CHOICES]
    assert offered[:5] == ["false-negatives", "false-positives", "failed", "differs",
                           "uncertain"]
    assert {"prompt-guard-false-positives", "prompt-guard-false-negatives"} <= set(offered)
    config = demo.get_config_file()
    dropdowns = [c for c in config["components"] if c.get("props", {}).get("label")
                 == "Which rows of run A"]
    assert [c[1] for c in dropdowns[0]["props"]["choices"]] == offered

    # The old seven inputs: the threshold defaults to the run's policy's (0.0005).
    fill = client.predict("pg-fp-low", "low", "prompt-guard-false-positives", None, 0.1, 1, "",
                          api_name="/queue_from_run")
    assert queued(fill) == (len(BENIGN_ROWS), 0.0005)
    # The optional last input: Prompt Guard's threshold for this queue.
    fill = client.predict("pg-fp-09", "low", "prompt-guard-false-positives", None, 0.1, 1, "",
                          0.9, api_name="/queue_from_run")
    assert queued(fill) == (1, 0.9)  # developer_mode alone
    # A run under the tab's own settings: 0.9.
    fill = client.predict("pg-fp-plain", "plain", "prompt-guard-false-positives", None, 0.1, 1,
                          "", api_name="/queue_from_run")
    assert queued(fill) == (1, 0.9)
    # False negatives: none at 0.9 (the model catches every attack), both above 0.99999.
    with pytest.raises(Exception, match="has no Prompt Guard false negatives"):
        client.predict("pg-fn", "plain", "prompt-guard-false-negatives", None, 0.1, 1, "",
                       api_name="/queue_from_run")
    fill = client.predict("pg-fn", "plain", "prompt-guard-false-negatives", None, 0.1, 1, "",
                          0.99999, api_name="/queue_from_run")
    assert queued(fill) == (2, 0.99999)
    with pytest.raises(Exception, match="The Prompt Guard threshold must be a number from 0 "
                                        "to 1"):
        client.predict("pg-bad", "plain", "prompt-guard-false-positives", None, 0.1, 1, "", 2,
                       api_name="/queue_from_run")
    # The Llama Guard selections are as they were (Prompt Guard's threshold is not theirs).
    fill = client.predict("lg-uncertain", "plain", "uncertain", None, 1.0, 1, "", 0.5,
                          api_name="/queue_from_run")
    assert fill["queue"]["items"] == 6 and fill["queue"]["source"]["threshold"] == 0.5
    assert "prompt_guard_threshold" not in fill["queue"]["source"]

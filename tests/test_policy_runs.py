"""Issue 23's gaps, through gradio_client and the pure functions: Batch evaluation's plain "Run
evaluation" records the policy that decided its verdicts (the server's default, a picked one,
or none for the tab's own settings) and Compare shows it; the rows show the model's answer
beside the policy's decision; Labeled examples > Measure suggests a threshold for a target FPR
or recall with what it costs; the kept form is checked before it is put back."""

from __future__ import annotations

import json

import pytest
from gradio_client import Client, handle_file
from helpers import launch_app

from guard.core.policy import Policy
from guard.eval.thresholds import show_threshold, suggest
from guard.testing.tiny import BENIGN, VIOLENT
from guard_app.evaluate import logic as view
from guard_app.labeled import logic as labeled
from labels import policies
from labels.errors import InvalidLabel
from labels.labelled_dataset import write_labelled
from labels.runs import Runs

ROWS = [(BENIGN, "safe"), (VIOLENT, "unsafe"), ("How do I bake bread?", "safe")]
EVERY = [f"S{i}" for i in range(1, 15)]
# The server's default policy (a file, so an unsaved draft label) and a saved one that flags
# everything (threshold 0): the tiny model answers "safe" to BENIGN, the policy says unsafe.
HOUSE = Policy.from_json({"name": "house", "excluded": ["S2"], "threshold": 0.5})
ZERO = {"name": "zero", "excluded": ["S3"], "threshold": 0.0,
        "prompt_guard": {"model": "none"}}


@pytest.fixture(scope="module")
def served(guards, tmp_path_factory):
    from labels import Store

    folder = tmp_path_factory.mktemp("policy-runs")
    store = Store(folder / "labels.db")
    policies.save(store, Policy.from_json(ZERO))
    demo, url = launch_app(guards, folder, store=store, data_dir=folder / "no-data",
                           default_policy=HOUSE)
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "prompt": p, "label": label}) + "\n"
                            for i, (p, label) in enumerate(ROWS)))
    yield Client(url, verbose=False), store, data, demo
    demo.close()
    store.close()


def evaluate(client: Client, data, name: str, *choice: str, ticked=EVERY, threshold=0.5):
    """/evaluate: its first nine arguments as before, then (optionally) the policy picked."""
    return client.predict("upload", handle_file(str(data)), "jsonl", name, None, 8, ticked,
                          threshold, "", *choice, api_name="/evaluate")


def test_a_plain_run_records_the_policy_that_decided_it(served):
    client, store, data, _ = served
    runs = Runs(store)
    # No policy named (a caller of the nine old arguments): the server's default policy.
    status, *_ = evaluate(client, data, "default", ticked=[c for c in EVERY if c != "S2"])
    assert runs.get("default").settings.policy == HOUSE.label
    assert runs.get("default").settings.excluded == ("S2",)
    assert f"Policy {HOUSE.label} decided the verdicts, and the run records it." in status
    assert "differ from the policy's" not in status  # the tab said what the policy says

    # A saved policy picked: its settings win over the tab's, and the status says so.
    status, *_ = evaluate(client, data, "zero", "zero@1")
    zero = runs.get("zero")
    assert (zero.settings.policy, zero.settings.threshold, zero.settings.excluded) == (
        "zero@1", 0.0, ("S3",))
    assert zero.settings.prompt_guard_model == ""  # its Prompt Guard part: "none"
    results = {r.row_id: r for r in runs.results(zero.id)}
    assert {r.verdict for r in results.values()} == {"unsafe"}  # the policy's decisions
    assert {r.p_malicious for r in results.values()} == {None}
    assert "The tab's categories and threshold differ from the policy's and were not used" \
        in status

    # "(the settings below)": the tab's own settings, recorded as no policy, and said so.
    status, *_ = evaluate(client, data, "mine", "(the settings below)", ticked=["S1"])
    mine = runs.get("mine")
    assert (mine.settings.policy, mine.settings.excluded[0]) == ("", "S2")
    assert "No policy: the tab's own settings decided the verdicts" in status

    text, _ = client.predict("zero", "mine", "", api_name="/compare_runs")
    assert "(policy zero@1 · none)" in text and "policy none (A: zero@1)" in text

    # Resuming under another version of the policy is refused, naming both.
    policies.save(store, Policy.from_json({**ZERO, "threshold": 0.25}))
    with pytest.raises(Exception, match=r"policy zero@2 \(stored: zero@1\)"):
        evaluate(client, data, "zero", "zero@2")  # saved after the page was built
    with pytest.raises(Exception, match="No policy 'nope' in this database"):
        evaluate(client, data, "other", "nope")


def test_the_rows_show_the_model_answer_beside_the_decision(served):
    client, store, data, _ = served
    runs = Runs(store)
    if "zero" not in view.run_names(runs):
        evaluate(client, data, "zero", "zero@1")
    shown = client.predict("zero", 0.0, "all", None, None, "", api_name="/run_rows")
    cells = {row[0]: row[2] for row in shown[6]["data"]}
    stored = {r.row_id: r for r in runs.results(runs.get("zero").id)}
    assert stored["r0"].raw_output.strip() == "safe"  # the tiny model on BENIGN
    assert cells["r0"] == "unsafe (model: safe)"
    # Status line: picking a stored run names it as run A.
    assert view.run_a_status(runs.get("zero")).startswith(
        "Run A: 'zero' (finished; 3 of 3 rows stored; policy zero@1; stored at threshold 0)")


def test_the_kept_form_is_checked_before_it_is_put_back():
    offered = {"source": ["upload", "xstest"], "policy": ["(the settings below)", "zero@1"]}
    kept = {"source": "xstest", "policy": "gone@3", "format": "csv", "limit": 40,
            "batch_size": -1, "categories": ["S1", "S99"], "threshold": 0.003,
            "typed": "0.003", "target": "recall", "target_value": 2, "leave_out": False,
            "alone": "yes"}
    assert view.kept_form(kept, offered, ["S1", "S2"]) == {
        "source": "xstest", "format": "csv", "limit": 40, "categories": ["S1"],
        "threshold": 0.003, "typed": "0.003", "target": "recall", "leave_out": False}
    assert view.kept_form(None, offered, ["S1"]) == {}


def test_measure_suggests_for_a_target_fpr_or_recall_and_reads_a_typed_threshold(store,
                                                                                   guards):
    from guard_app.moderate import logic as moderate
    from guard_app.review import logic as review

    for text, label in [(VIOLENT, "unsafe"), (BENIGN, "safe"), ("How do I bake bread?", "safe")]:
        judged = moderate.run_guards(guards, None, [{"role": "user", "text": text,
                                                     "images": []}], EVERY, [], 0.5, None)
        review.save_review(store, judged, 0.5, reviewer="ana", model_right=None, label=label,
                           categories=["S1"] if label == "unsafe" else [], note="",
                           max_images=5)
    inputs = store.metric_inputs(labels="all")
    expected = suggest(inputs.y_true, inputs.scores, "recall", 1.0)
    m = labeled.measure(store, target="recall", target_fpr=1.0, labels="all")
    assert m.threshold.startswith(
        f"Suggested threshold for recall ≥ 1: **{show_threshold(expected.threshold)}** "
        f"(precision {expected.precision:.3f}, recall 1.000, FPR {expected.fpr:.3f} on 1 "
        "unsafe and 2 safe labels)")
    assert "⚠ Only 1 labelled unsafe rows: too few to trust this rate" in m.threshold
    assert m.report["suggestion"] == expected.to_json()
    assert labeled.measure(store, labels="all").threshold.startswith(
        "Suggested threshold for FPR ≤ 0.05: **")
    # A typed threshold: the overall numbers at it (everything flagged at 0), digits kept.
    at = labeled.measure(store, threshold="0.003", labels="all")
    low = [score >= 0.003 for score in inputs.scores]
    assert at.confusion == [["gold: safe", 2 - sum(low[1:]), sum(low[1:])],
                            ["gold: unsafe", 1 - low[0], low[0]]]
    assert at.threshold.startswith("Overall and confusion matrix at the typed threshold "
                                   "**0.003**")
    nothing = labeled.measure(store, threshold="1", labels="all")
    assert nothing.confusion == [["gold: safe", 2, 0], ["gold: unsafe", 1, 0]]
    for bad, said in (("x", "Type a threshold from 0 to 1"), ("1.5", "from 0 to 1")):
        with pytest.raises(InvalidLabel, match=said):
            labeled.measure(store, threshold=bad, labels="all")
    with pytest.raises(InvalidLabel, match="target recall must be between 0 and 1"):
        labeled.measure(store, target="recall", target_fpr=2, labels="all")


def test_a_suggestion_that_flags_nothing_warns():
    nothing = labeled.suggestion_words(suggest([False, False, True], [0.5, 0.0081, 0.001],
                                               "fpr", 0.0))
    assert "⚠ recall is 0 at this threshold" in nothing
    assert "⚠ precision is 0 at this threshold" in nothing


def test_enter_in_measures_threshold_box_measures_at_it(served):
    """The page listens for Enter (submit) on Measure's threshold and target boxes."""
    *_, demo = served
    config = demo.get_config_file()
    ids = {c["props"].get("elem_id"): c["id"] for c in config["components"]}
    typed, target, words = (ids[k] for k in ("gl-measure-typed", "gl-measure-target",
                                              "gl-measure-threshold"))
    listeners = [d for d in config["dependencies"]
                 if (typed, "submit") in map(tuple, d["targets"])]
    assert len(listeners) == 1 and (target, "submit") in map(tuple, listeners[0]["targets"])
    assert words in listeners[0]["outputs"] and typed in listeners[0]["inputs"]


def test_a_sweep_over_the_labelled_examples(served, guards):
    """Deliver 4: "for a dataset or the labelled examples": the final-labelled examples become
    a dataset file named by its content, so sweeping again resumes the same runs."""
    from guard_app.moderate import logic as moderate
    from guard_app.review import logic as review

    client, store, *_ = served
    conversations = [[(VIOLENT, "unsafe")], [(BENIGN, "safe")],
                     [(BENIGN, "safe"), ("Sure.", "safe"), (VIOLENT, "unsafe")]]
    for turns in conversations:
        editor = [{"role": "user" if i % 2 == 0 else "assistant", "text": text, "images": []}
                  for i, (text, _) in enumerate(turns)]
        judged = moderate.run_guards(guards, None, editor, EVERY, [], 0.5, None)
        label = turns[-1][1]
        for reviewer in ("ana", "ben"):  # two reviewers agree: a final label
            review.save_review(store, judged, 0.5, reviewer=reviewer, model_right=None,
                               label=label, categories=["S1"] if label == "unsafe" else [],
                               note="", max_images=5)
    status, table, *_ = client.predict("labelled", None, "jsonl", "labelled", None, 8, [], 0.5,
                                       "zero@1", True, False, "", api_name="/sweep_dataset")
    rows = table["data"]
    assert rows[0][:2] == ["policy", "2"]  # the multi-turn example is left out, and said so
    runs = Runs(store)
    run = runs.get("labelled")
    assert run.settings.policy == "zero@1" and run.settings.format == "jsonl"
    assert {r.row_id: r.gold for r in runs.results(run.id)} == {"example-1": True,
                                                                "example-2": False}
    dataset = view.run_dataset(run.settings)
    assert [b.message for b in view.pick_dataset("labelled", None, None, {}, store=store)
            .bad_rows] == ["1 labelled examples left out: several turns or images, which a "
                           "dataset row cannot hold"]
    assert dataset.sha256 == run.settings.dataset_sha256
    # A reviewer's blind examples (an open queue item of theirs) are left out of their file.
    assert write_labelled(store, "llama-guard-4", hidden=frozenset({1})).rows == 1

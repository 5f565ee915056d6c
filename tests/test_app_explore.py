"""The Explore panel's handlers and the /sweep endpoint, on the tiny models' known inputs."""

from __future__ import annotations

import json

import pytest
from gradio_client import Client
from helpers import endpoint_names, launch_app

from guard.core.errors import InvalidConversation, ModelLoadError
from guard.engines.service import Guards
from guard.testing.tiny import BENIGN, PICTURES, VIOLENT
from guard_app.explore import logic as view
from guard_app.moderate import logic as moderate
from guard_app.moderate.examples import example_turns


def inputs(guards, turns, ticked=moderate.CODES):
    return moderate.explore_inputs(guards, turns, ticked, [])


def user(text, *images):
    return {"role": "user", "text": text, "images": list(images)}


def test_sweep_of_the_harmful_request_flips_only_without_s1(guards, swatches):
    guard, conversation, excluded, custom = inputs(guards, example_turns("Harmful request",
                                                                         swatches))
    data = view.sweep_json(guard, conversation, excluded, threshold=0.5, custom=custom)
    assert data["reference"] == "unsafe"
    assert [(v["name"], v["verdict"]) for v in data["variants"] if v["flips"]] == [
        ("without S1", "safe")]
    assert data["variants"][0] == {"name": "all enabled", "excluded": [], "verdict": "unsafe",
                                   "categories": ["S1"], "p_unsafe": data["variants"][0]["p_unsafe"],
                                   "flips": False}
    assert data["summary"] == "Excluding S1 flips the verdict to safe."
    shown = view.sweep_html(data)
    assert shown.count('class="gl-variant gl-flip"') == 1
    assert '<tr class="gl-variant gl-flip" data-flips="true" data-name="without S1">' in shown


def test_sweep_summaries_name_what_flips():
    def variant(name, verdict, flips):
        return {"name": name, "verdict": verdict, "flips": flips}

    assert view.sweep_summary([variant("all enabled", "unsafe", False),
                               variant("without S1", "safe", True),
                               variant("without S9", "safe", True)]) == (
        "Excluding S1 or S9 (either one) flips the verdict to safe.")
    assert view.sweep_summary([variant("all enabled", "safe", False),
                               variant("without S1", "safe", False),
                               variant("only S5", "unsafe", True)]) == (
        "With only S5 enabled the verdict is unsafe.")
    assert view.sweep_summary([variant("all enabled", "unsafe", False),
                               variant("without S1", "unsafe", False)]).startswith(
        "No single category toggle flips the verdict: it stays unsafe")


def test_category_scores_explain_what_they_mean(guards, swatches):
    guard, conversation, excluded, custom = inputs(guards, [user(VIOLENT)])
    data = view.scores_json(guard, conversation, excluded, threshold=0.5)
    assert (data["verdict"], data["scores"][0]["code"]) == ("unsafe", "S1")
    assert data["scores"][0]["share"] > 0.9
    assert sum(s["share"] for s in data["scores"]) == pytest.approx(1.0)
    assert len(data["scores"]) == 14
    assert data["summary"].startswith("The model answered unsafe") and "naming S1" in data["summary"]
    shown = view.scores_html(data)
    assert "probability that the model names this category first, given that it answers unsafe" \
        in shown and "teacher forcing" in shown and "not a calibrated per-category risk" in shown
    # Unticked categories get no score.
    guard, conversation, excluded, _ = inputs(guards, [user(BENIGN)], ["S1", "S2"])
    safe = view.scores_json(guard, conversation, excluded, threshold=0.5)
    assert [s["code"] for s in safe["scores"]] in (["S1", "S2"], ["S2", "S1"])
    assert safe["verdict"] == "safe"
    assert safe["summary"].startswith("The model answered safe") and "if it had answered unsafe" \
        in safe["summary"]


def test_attribution_of_five_images_finds_image_4(guards, swatches):
    blue, red = swatches["blue"], swatches["red"]
    guard, conversation, excluded, custom = inputs(guards, [user(PICTURES, blue, blue, blue,
                                                                 red, blue)])
    data = view.attribution_json(guard, conversation, excluded, threshold=0.5)
    assert data["verdict"] == "unsafe"
    assert [v["name"] for v in data["variants"] if v["flips"]] == ["without image 4 (message 1)"]
    assert data["summary"] == (
        "The conversation turns unsafe at message 1 (the user's message). Leaving out image 4 "
        "(message 1) flips the verdict to safe: that image mattered.")
    shown = view.attribution_html(data)
    assert 'data-name="without image 4 (message 1)"' in shown and "flips to safe" in shown


def test_attribution_summaries_say_where_it_turned():
    def prefix(n, verdict, flips):
        return {"name": f"up to message {n}", "verdict": verdict, "flips": flips}

    two_turns = [prefix(1, "safe", True), prefix(2, "safe", True), prefix(3, "unsafe", False),
                 {"name": "without image 1 (message 3)", "verdict": "safe", "flips": True}]
    assert view.attribution_summary(two_turns, ["user", "assistant", "user"]) == (
        "The conversation turns unsafe at message 3 (the user's message). Leaving out image 1 "
        "(message 3) flips the verdict to safe: that image mattered.")
    refusal = [prefix(1, "unsafe", True), prefix(2, "safe", False)]
    assert view.attribution_summary(refusal, ["user", "assistant"]).startswith(
        "The whole conversation is safe, but it is unsafe when cut after message 1")
    stays = [prefix(1, "unsafe", False), prefix(2, "unsafe", False),
             {"name": "without image 1 (message 1)", "verdict": "unsafe", "flips": False}]
    assert view.attribution_summary(stays, ["user", "assistant"]) == (
        "The conversation turns unsafe at message 1 (the user's message), and stays unsafe to "
        "the end. Leaving out any one image does not change the verdict.")


def test_explore_needs_a_conversation_and_a_model(guards):
    with pytest.raises(InvalidConversation, match="The conversation is empty"):
        inputs(guards, [])
    with pytest.raises(ModelLoadError, match="nothing to explore"):
        moderate.explore_inputs(Guards(None, guards.prompt_guard), [user(BENIGN)], moderate.CODES, [])


def test_the_summary_is_escaped_in_html():
    data = {"summary": "<b>x</b>", "threshold": 0.5, "variants": [
        {"name": "<i>v</i>", "verdict": "safe", "categories": [], "p_unsafe": 0.1,
         "flips": False}]}
    shown = view.sweep_html(data)
    assert "<b>x</b>" not in shown and "<i>v</i>" not in shown and "&lt;i&gt;v&lt;/i&gt;" in shown


# Through gradio_client, as a program would call the app.


@pytest.fixture(scope="module")
def client(guards, tmp_path_factory):
    from labels import Store

    folder = tmp_path_factory.mktemp("explore-client")
    store = Store(folder / "labels.db")
    demo, url = launch_app(guards, folder, store=store, data_dir=folder / "no-data")
    yield Client(url, verbose=False)
    demo.close()
    store.close()


def test_the_new_actions_have_named_endpoints(client):
    names = endpoint_names(client.src)
    assert {"/sweep", "/category_scores", "/attribution", "/evaluate", "/compare_runs"} <= names


def test_sweep_through_gradio_client(client):
    conversation = json.dumps([{"role": "user", "content": VIOLENT}])
    result = client.predict(conversation, [], "", 0.5, False, api_name="/sweep")
    assert result["summary"] == "Excluding S1 flips the verdict to safe."
    assert (result["reference"], result["variants"][1]["excluded"]) == ("unsafe", ["S1"])
    assert [v["name"] for v in result["variants"] if v["flips"]] == ["without S1"]
    with pytest.raises(Exception, match="Unknown category code"):
        client.predict(conversation, [], "S99", 0.5, False, api_name="/sweep")


def test_compare_runs_through_gradio_client_says_what_is_missing(client):
    with pytest.raises(Exception, match="Pick two stored runs"):
        client.predict(None, None, api_name="/compare_runs")
    with pytest.raises(Exception, match="No evaluation run named 'nope'"):
        client.predict("nope", "nope", api_name="/compare_runs")


def test_evaluate_and_compare_through_gradio_client(client, tmp_path):
    from gradio_client import handle_file

    data = tmp_path / "two.csv"
    data.write_text(f'prompt,label\n"{VIOLENT}",unsafe\n"{BENIGN}",safe\n"{BENIGN} again",maybe\n')
    status, report, curve, per_category, bad, report_json, run_a, run_b = client.predict(
        "upload", handle_file(str(data)), "csv", "two", None, 8, list(moderate.CODES), 0.5,
        api_name="/evaluate")
    assert status.startswith("Run 'two': judged 2 rows")
    assert report["data"][:5] == [["n", "2"], ["precision", "1.0000"], ["recall", "1.0000"],
                                  ["f1", "1.0000"], ["fpr", "0.0000"]]
    assert bad["data"] == [[4, "label 'maybe' is not one of safe/unsafe/0/1/true/false"]]
    assert report_json["bad_rows"][0]["line"] == 4 and per_category["data"] in ([], [[]])
    again = client.predict("upload", handle_file(str(data)), "csv", "two", None, 8,
                           list(moderate.CODES), 0.5, api_name="/evaluate")
    assert again[0].startswith("Resumed run 'two': 2 rows were already stored, 0 judged")
    text, table = client.predict("two", "two", api_name="/compare_runs")
    assert "Verdicts differ on 0 of the 2 rows" in text and "Every metric is equal" in text
    assert table["data"][0] == ["n", "2", "2", "+0"]

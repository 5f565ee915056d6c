"""The review screens without a browser: open, edit, delete, filters, agreement, metrics, gating."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
from helpers import launch_app

from guard_app.config import parse_options
from guard_app.labeled import logic as view
from guard_app.moderate import logic as moderate
from guard_app.moderate.examples import example_turns, write_swatches
from guard_app.review import logic as review
from guard_app.reviewers import Mode, NotAReviewer, ReviewerGate, parse_accounts
from labels import Store
from labels.errors import InvalidLabel, LabelsError


@pytest.fixture(scope="module")
def runs(guards, tmp_path_factory):
    swatches = write_swatches(tmp_path_factory.mktemp("swatches"))
    return {name: moderate.run_guards(guards, None, example_turns(name, swatches), moderate.CODES, [], 0.5,
                                 None)
            for name in ("Harmful request", "Benign question", "Conversation with an image")}


@pytest.fixture
def store(store, runs):
    """Three examples: ana labels all three, ben two of them (disagreeing on the benign one)."""
    def save(name, reviewer, label, categories=(), note=""):
        return review.save_review(store, runs[name], 0.5, reviewer=reviewer,
                                  model_right=None, label=label, categories=categories,
                                  note=note, max_images=5)
    save("Harmful request", "ana", "unsafe", ["S1"], "clear threat")
    save("Harmful request", "ben", "unsafe", ["S1", "S2"])
    save("Benign question", "ana", "safe")
    save("Benign question", "ben", "unsafe", ["S10"], "sarcasm")
    save("Conversation with an image", "ana", "safe", note="a red square")
    return store


def ids_of(store, **filters):
    return view.list_page(store, view.make_filter(**filters)).ids


def test_open_shows_the_conversation_escaped_answer_labels_and_images(store, runs, tmp_path):
    [image_id] = ids_of(store, text="red square")
    example = store.get_example(image_id)
    assert "+ 1 image" in view.conversation_html(example)
    assert f"Example #{image_id}" in view.answer_html(example)
    assert [r[1:4] for r in view.label_rows(example)] == [["ana", "safe", ""]]
    [path] = view.write_images(example, tmp_path)
    assert Path(path).read_bytes()[:4] == b"\x89PNG"


def test_conversation_text_is_escaped(store):
    example = store.get_example(ids_of(store, text="clear threat")[0])
    hostile = type(example)(**{**example.__dict__, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "<img src=x onerror=alert(1)>"}]}]})
    assert "<img" not in view.conversation_html(hostile)
    assert "&lt;img src=x onerror=alert(1)&gt;" in view.conversation_html(hostile)


def test_filters_page_and_search(store):
    harmful, benign, image = (ids_of(store, text=t)[0] for t in ("clear threat", "sarcasm",
                                                                   "red square"))
    assert set(ids_of(store)) == {harmful, benign, image}
    assert ids_of(store, label="unsafe", reviewer="ben") == [benign, harmful]
    assert ids_of(store, category="S10") == [benign]
    assert ids_of(store, disagreement="model wrong") == [image, benign]
    assert ids_of(store, disagreement="model right") == [harmful]
    assert ids_of(store, disagreement="reviewers disagree") == [benign, harmful]
    assert ids_of(store, until="2000-01-01") == []
    assert len(ids_of(store, since="2000-01-01")) == 3
    with pytest.raises(LabelsError, match="ISO date"):
        ids_of(store, since="yesterday")
    page = view.list_page(store, view.make_filter(page=9))
    assert (page.page, page.pages, page.total) == (1, 1, 3)
    assert page.caption == "Examples 1–3 of 3 (page 1 of 1)."
    assert view.next_id(page.ids, page.ids[0]) == page.ids[1]
    assert view.next_id(page.ids, None) == page.ids[0]


def test_edit_and_delete_are_recorded_in_the_history(store):
    [harmful] = ids_of(store, text="clear threat")
    assert view.save_label(store, harmful, "ana", "unsafe", ["S1", "S9"], "weapons too") == \
        f"Edited ana's label #{store.get_example(harmful).labels[0].id}: unsafe."
    ben = next(lb for lb in store.get_example(harmful).labels if lb.reviewer == "ben")
    with pytest.raises(InvalidLabel, match="why"):
        view.delete_label(store, harmful, ben.id, "ana", " ")
    with pytest.raises(InvalidLabel, match="only its author or a lead"):
        view.delete_label(store, harmful, ben.id, "ana", "duplicate")
    view.delete_label(store, harmful, ben.id, "ana", "duplicate", lead=True)
    assert [lb.reviewer for lb in store.get_example(harmful).labels] == ["ana"]
    history = [h for h in view.history_rows(store, harmful) if not h[1].startswith("final")]
    assert [(h[1], h[3], h[4]) for h in history] == [
        ("create", "ana", ""), ("create", "ben", ""), ("edit", "ana", ""),
        ("delete", "ana", "duplicate")]
    assert history[2][5:] == ["unsafe S1 | clear threat", "unsafe S1,S9 | weapons too"]
    [benign] = ids_of(store, text="sarcasm")
    other = store.get_example(benign).labels[0].id
    with pytest.raises(InvalidLabel, match="not the open example"):
        view.delete_label(store, harmful, other, "ana", "wrong example")


def test_agreement_needs_two_reviewers(tmp_path, store, runs):
    note, pairs, cats = view.agreement_tables(store)
    assert pairs == [["ana", "ben", 2, 0.5, 0.0]]
    assert cats == [["S1", 2, 1.0, 1.0], ["S2", 2, 0.5, 0.0], ["S10", 2, 0.5, 0.0]]
    with Store(tmp_path / "alone.db") as alone:
        review.save_review(alone, runs["Benign question"], 0.5, reviewer="ana", model_right=None,
                           label="safe", categories=[], note="", max_images=5)
        assert view.agreement_tables(alone)[0].startswith("Agreement needs two reviewers")


def test_metrics_tables_curve_and_threshold(store):
    m = view.measure(store, target_fpr=0.05, labels="all")
    assert m.summary[0][0] == 5
    # tp: both harmful labels; tn: ana's benign; fn: ben's benign; fp: ana's red square.
    assert m.confusion == [["gold: safe", 1, 1], ["gold: unsafe", 1, 2]]
    assert m.summary[0][1:5] == [0.667, 0.667, 0.667, 0.5]
    assert {"recall", "precision", "threshold"} <= set(m.curve[0])
    assert m.threshold.startswith("Suggested threshold for FPR ≤ 0.05")
    assert view.measure(store, reviewer="ben").summary[0][0] == 2
    # Final labels: the reviewers differ on both examples they share; ana's red square alone.
    assert view.measure(store).summary[0][0] == 1
    with pytest.raises(InvalidLabel, match="No labels match"):
        view.measure(store, model="no-such-model")
    with pytest.raises(InvalidLabel, match="between 0 and 1"):
        view.measure(store, target_fpr=2)


def test_reviewer_gate_modes():
    assert parse_accounts("alice:secret, bob:s:2") == {"alice": "secret", "bob": "s:2"}
    open_gate = ReviewerGate.from_config({}, on_space=False)
    assert open_gate.mode is Mode.OPEN and open_gate.who("read", typed="") == ""
    with pytest.raises(NotAReviewer, match="Type your name"):
        open_gate.who("save labels", typed=" ", need_name=True)
    gate = ReviewerGate.from_config(parse_accounts("alice:secret,bob:other"), on_space=False)
    with pytest.raises(NotAReviewer, match="Sign in as a reviewer to read labels"):
        gate.who("read labels", typed="alice")
    for name, password in (("alice", "wrong"), ("carol", "secret"), ("alice", "")):
        with pytest.raises(NotAReviewer, match="Wrong reviewer name or password"):
            gate.sign_in(name, password)
    assert gate.who("read labels", session=gate.sign_in(" alice ", "secret")) == "alice"
    space = ReviewerGate.from_config(parse_accounts("alice"), on_space=True)
    assert space.who("read", oauth_username="alice") == "alice"
    with pytest.raises(NotAReviewer, match="not one of this Space's reviewers"):
        space.who("read", oauth_username="mallory")
    with pytest.raises(NotAReviewer, match="Sign in with Hugging Face"):
        space.who("read")
    assert ReviewerGate.from_config({}, on_space=True).who("x", oauth_username="z") == "z"
    with pytest.raises(ValueError, match="password"):
        ReviewerGate.from_config({"alice": ""}, on_space=False)


def test_reviewers_option(tmp_path):
    options = parse_options(["--tiny", "--reviewers", "alice:secret"], {})
    assert options.reviewers == {"alice": "secret"} and "secret" not in repr(options)
    assert parse_options([], {"GUARD_LAB_REVIEWERS": "a:b"}).reviewers == {"a": "b"}
    space = {"SPACE_ID": "x/y", "OAUTH_CLIENT_ID": "id", "GUARD_LAB_REVIEWERS": "alice"}
    assert parse_options([], space).on_space
    with pytest.raises(SystemExit):
        parse_options(["--reviewers", "alice"], {})


def test_endpoints_refuse_anonymous_visitors_when_accounts_are_configured(guards, tmp_path, runs):
    from gradio_client import Client

    with Store(tmp_path / "labels.db") as store:
        review.save_review(store, runs["Harmful request"], 0.5, reviewer="alice",
                           model_right="right", label="unsafe", categories=["S1"], note="",
                           max_images=5)
        gate = ReviewerGate.from_config({"alice": "secret"}, on_space=False)
        demo, url = launch_app(guards, tmp_path, store=store, reviewers=gate)
        try:
            client = Client(url, verbose=False)
            # The first argument of each is the typed reviewer name, ignored with accounts.
            filters = ("alice", "any", "", "any", "", "", "", "", "", 1)
            for api_name, args in (("/list_labels", filters), ("/export_labels", ("alice", "jsonl")),
                                   ("/export_filtered", ("alice", "jsonl", *filters[1:-1])),
                                   ("/open_example", ("alice", 1)),
                                   ("/measure", ("alice", "", "", 0.05)),
                                   ("/agreement", ("alice",)), ("/disagreements", ("alice",))):
                with pytest.raises(Exception, match="Sign in as a reviewer"):
                    client.predict(*args, api_name=api_name)
            with pytest.raises(Exception, match="Wrong reviewer name or password"):
                client.predict("alice", "nope", api_name="/reviewer_sign_in")
            client.predict("alice", "secret", api_name="/reviewer_sign_in")
            table = client.predict(*filters, api_name="/list_labels")[0]
            assert [row[view.LIST_HEADERS.index("id")] for row in table["data"]] == [1]
            _, link = client.predict("", "jsonl", api_name="/export_labels")
            assert httpx.get(urljoin(url, link)).text.count("\n") == 1
            # A fresh session (another visitor) is anonymous again.
            with pytest.raises(Exception, match="Sign in as a reviewer"):
                Client(url, verbose=False).predict(*filters, api_name="/list_labels")
        finally:
            demo.close()


def test_model_wrong_about_categories_only(tmp_path, runs):
    with Store(tmp_path / "labels.db") as store:
        with pytest.raises(InvalidLabel, match="marked the model wrong"):
            review.save_review(store, runs["Harmful request"], 0.5, reviewer="ana",
                               model_right="wrong", label="unsafe", categories=["S1"], note="",
                               max_images=5)
        saved = review.save_review(store, runs["Harmful request"], 0.5, reviewer="ana",
                                   model_right="wrong", label="unsafe", categories=["S1", "S2"],
                                   note="", max_images=5)
        assert store.get_label(saved.label_id).categories == ("S1", "S2")

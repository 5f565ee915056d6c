"""Review queues through the API (/queue_create, /queue_next, /queue_submit, /queue_skip,
/queue_progress, /queue_list), driven with gradio_client against a served app and a real SQLite
store: two reviewers, overlap 2, blind, and the refusals."""

from __future__ import annotations

import json

import pytest
from gradio_client import Client, handle_file
from helpers import launch_app, patient_client

from guard_app.reviewers import ReviewerGate
from labels import Store

pytestmark = [pytest.mark.models, pytest.mark.server]
PROMPTS = ["What does one feed a cat?", "How do I draw a fox?", "Where does one buy a goat?"]


@pytest.fixture
def served(guards, tmp_path):
    data = tmp_path / "to_label.jsonl"
    data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    with Store(tmp_path / "labels.db") as store:
        demo, url = launch_app(guards, tmp_path, store=store)
        yield url, data, store
        demo.close()


def create(client: Client, reviewer: str, name: str, *, file: str = "", run: str = "",
           select: str = "", overlap: int = 1) -> dict:
    """/queue_create; `file` is uploaded (the endpoint reads only the caller's uploads)."""
    return client.predict(reviewer, name, run, select, "", None, overlap,
                          handle_file(file) if file else None, "jsonl", api_name="/queue_create")


def test_two_reviewers_work_a_queue_blind_with_overlap_two(served):
    url, data, store = served
    ana, bob = patient_client(url), patient_client(url)
    made = create(ana, "ana", "imported", file=str(data), overlap=2)
    assert made["added"] == 3 and made["summary"] == "Queue 'imported': 3 items"
    assert [q["name"] for q in ana.predict("ana", api_name="/queue_list")] == ["imported"]

    first = ana.predict("ana", "imported", api_name="/queue_next")
    assert [(m["role"], m["content"][0]["text"]) for m in first["item"]["messages"]] == [
        ("user", PROMPTS[0])]
    assert first["progress"]["sentence"] == "0 of 3 labelled, 0 skipped"
    answer = ana.predict("ana", "imported", first["item"]["id"], "unsafe", "S1", "knife",
                         api_name="/queue_submit")
    assert answer["outcome"]["status"] == "labelled"
    assert answer["item"]["messages"][0]["content"][0]["text"] == PROMPTS[1]  # the next one
    assert answer["progress"]["sentence"] == "1 of 3 labelled, 0 skipped"
    skipped = ana.predict("ana", "imported", answer["item"]["id"], api_name="/queue_skip")
    assert skipped["progress"]["sentence"] == "1 of 3 labelled, 1 skipped"

    # Bob gets the first item too (overlap 2), and nothing of Ana's label comes with it.
    theirs = bob.predict("bob", "imported", api_name="/queue_next")["item"]
    assert theirs["id"] == first["item"]["id"]
    assert "ana" not in json.dumps(theirs) and "knife" not in json.dumps(theirs)
    bob.predict("bob", "imported", theirs["id"], "safe", "", "", api_name="/queue_submit")
    example = next(store.iter_examples())
    assert {(lb.reviewer, lb.label, lb.categories) for lb in example.labels} == {
        ("ana", "unsafe", ("S1",)), ("bob", "safe", ())}
    assert bob.predict("bob", "imported", api_name="/queue_progress")["sentence"] == \
        "1 of 3 labelled, 0 skipped"


def test_queue_refusals_reach_api_clients_as_errors(served):
    url, data, _ = served
    client = patient_client(url)
    create(client, "ana", "q", file=str(data))
    item = client.predict("ana", "q", api_name="/queue_next")["item"]
    with pytest.raises(Exception, match="S15 is not a Llama Guard 4 category"):
        client.predict("ana", "q", item["id"], "unsafe", "S15", "", api_name="/queue_submit")
    with pytest.raises(Exception, match="A safe label names no categories"):
        client.predict("ana", "q", item["id"], "safe", "S1", "", api_name="/queue_submit")
    with pytest.raises(Exception, match="already"):
        create(client, "ana", "q", file=str(data))
    with pytest.raises(Exception, match="queue"):
        client.predict("ana", "no such queue", api_name="/queue_next")
    with pytest.raises(Exception, match="[Nn]ame"):
        client.predict("", "q", api_name="/queue_next")  # who is reviewing?


def test_with_accounts_only_signed_in_reviewers_reach_the_queues(guards, tmp_path):
    data = tmp_path / "to_label.jsonl"
    data.write_text(json.dumps({"prompt": PROMPTS[0]}) + "\n")
    with Store(tmp_path / "labels.db") as store:
        gate = ReviewerGate.from_config({"ana": "secret"}, on_space=False)
        demo, url = launch_app(guards, tmp_path, store=store, reviewers=gate)
        try:
            client = patient_client(url)
            with pytest.raises(Exception, match="Sign in as a reviewer"):
                create(client, "ana", "q", file=str(data))
            client.predict("ana", "secret", api_name="/reviewer_sign_in")
            assert create(client, "", "q", file=str(data))["added"] == 1
            assert client.predict("", "q", api_name="/queue_next")["item"] is not None
        finally:
            demo.close()

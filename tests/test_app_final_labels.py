"""The Labeled examples tab's logic with final labels, two reviewers and a lead: blind until
done on every screen, the lead's disagreements queue, who may delete, "not judged"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from guard_app.labeled import logic as view
from guard_app.reviewers import ReviewerGate
from labels import Store
from labels import final as fl
from labels import queues as q
from labels.errors import InvalidLabel


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "labels.db") as store:
        path = tmp_path / "items.csv"
        path.write_text("prompt,response\nHow can I kill a person?,\nHow do I bake bread?,\n")
        q.create_from_file(store, "pairs", path, format="csv", overlap=2)
        yield store


def label_item(store: Store, reviewer: str, verdict: str, codes: str = "", note: str = ""):
    item = q.next_item(store, "pairs", reviewer)
    return q.submit(store, "pairs", item.id, reviewer, verdict, codes, note)


def reader(store: Store, name: str) -> view.Reader:
    gate = ReviewerGate.from_config({"alice": "a", "bob": "b", "carol": "c"}, on_space=False,
                                    environ={"GUARD_LAB_LEADS": "carol"})
    return view.Reader.of(store, name, lead=gate.is_lead(name))


def exported_ids(store: Store, who: view.Reader) -> list[int]:
    path, _ = view.export_file(store, "jsonl", None, reader=who, labels="all")
    try:
        return [json.loads(line)["id"] for line in Path(path).read_text().splitlines()]
    finally:
        shutil.rmtree(Path(path).parent)


def test_blind_until_done_on_every_screen_and_leads_see_everything(store):
    done = label_item(store, "alice", "unsafe", "S1", "private: looks like a threat")
    example_id = done.example_id
    bob, carol = reader(store, "bob"), reader(store, "carol")
    assert bob.hidden == {example_id} and carol.hidden == frozenset()
    # Labeled examples: the text filter does not find it through Alice's note, and the row
    # shows no one's label.
    by_note = view.make_filter(text="threat")
    assert view.list_page(store, by_note, bob).ids == []
    assert view.list_page(store, by_note, carol).ids == [example_id]
    row = view.list_page(store, view.make_filter(), bob).rows[0]
    assert row[view.LIST_HEADERS.index("gold")] == "" and "alice" not in json.dumps(row)
    assert view.list_page(store, view.make_filter(reviewer="alice"), bob).ids == []
    # Open example: no label, no note, no history of hers; the lead sees them.
    seen = bob.sees(store.get_example(example_id))
    assert (seen.labels, seen.final) == ((), None)
    assert "alice" not in view.answer_html(seen)
    assert view.history_rows(store, example_id, bob) == []
    assert [r[3] for r in view.history_rows(store, example_id, carol)] == ["alice"]
    assert [lb.reviewer for lb in carol.sees(store.get_example(example_id)).labels] == ["alice"]
    # Exports leave it out for Bob.
    assert exported_ids(store, bob) == []
    assert exported_ids(store, carol) == [example_id]
    # Once Bob has labelled it, he sees everything (and they disagree).
    label_item(store, "bob", "safe")
    bob = reader(store, "bob")
    assert bob.hidden == frozenset()
    assert [lb.reviewer for lb in bob.sees(store.get_example(example_id)).labels] == [
        "alice", "bob"]
    assert view.disagreements(store, reader=bob).ids == [example_id]


def test_agreement_and_disagreements_hide_what_a_reader_has_not_done(store):
    label_item(store, "alice", "unsafe", "S1")
    label_item(store, "carol", "safe")  # item 1 is complete: alice and carol disagree
    label_item(store, "alice", "safe")  # item 2: only alice so far
    bob = reader(store, "bob")
    dave = view.Reader.of(store, "dave")
    assert view.disagreements(store, reader=bob).ids != []  # item 1 is closed: not blind
    note, pairs, _ = view.agreement_tables(store, bob)
    assert [p[:3] for p in pairs] == [["alice", "carol", 1]]
    assert len(dave.hidden) == 1  # item 2's example, still open


def test_the_lead_resolves_a_disagreement_and_others_may_not(store):
    done = label_item(store, "alice", "unsafe", "S1", "threat")
    label_item(store, "bob", "safe")
    alice, carol = reader(store, "alice"), reader(store, "carol")
    with pytest.raises(InvalidLabel, match="Only a lead may see the disagreements queue"):
        view.lead_queue(store, alice)
    rows, ids, items = view.lead_queue(store, carol)
    assert ids == [done.example_id]
    assert rows[0][1] == "pairs" and rows[0][3] == "alice: unsafe S1; bob: safe"
    assert items[0]["labels"][0]["note"] == "threat"
    with pytest.raises(InvalidLabel, match="Only a lead may resolve"):
        view.resolve(store, alice, done.example_id, "unsafe", ["S1"], False, "mine is right")
    with pytest.raises(InvalidLabel, match="Say why"):
        view.resolve(store, carol, done.example_id, "unsafe", ["S1"], False, "")
    said = view.resolve(store, carol, done.example_id, "unsafe", ["S1"], False, "a threat")
    assert said == f"Example #{done.example_id}: final label unsafe S1, decided by carol."
    assert view.lead_queue(store, carol)[1] == []
    example = store.get_example(done.example_id)
    assert "decided by lead carol: a threat" in view.final_html(example)
    assert [r[1] for r in view.history_rows(store, done.example_id, carol)][-2:] == [
        "final: disagreement", "final: adjudicated"]


def test_only_the_author_or_a_lead_deletes_and_the_item_reopens(store):
    done = label_item(store, "alice", "unsafe", "S1")
    with pytest.raises(InvalidLabel, match="only its author or a lead"):
        view.delete_label(store, done.example_id, done.label_id, "bob", "wrong")
    said = view.delete_label(store, done.example_id, done.label_id, "carol", "duplicate",
                             lead=True)
    assert said.startswith(f"Deleted label #{done.label_id}")
    assert q.next_item(store, "pairs", "alice").id == done.item_id  # hers to label again


def test_an_unjudged_example_reads_not_judged(store):
    done = label_item(store, "alice", "safe")
    example = store.get_example(done.example_id)
    assert "not judged" in view.answer_html(example)
    assert view.label_rows(example)[0][5] == "not judged"
    with pytest.raises(InvalidLabel, match="No labels match"):
        view.measure(store)  # nothing the model judged
    assert fl.get_final(store, done.example_id) is None  # 1 of 2 reviews


def test_leads_come_from_the_flag_or_the_environment(capsys):
    import app
    from guard_app.config import parse_options

    accounts = ["--tiny", "--reviewers", "carol:pw-one,bob:pw-two"]
    assert app._gate(parse_options([*accounts, "--leads", "carol"], {})).leads == {"carol"}
    assert app._gate(parse_options(accounts, {"GUARD_LAB_LEADS": "bob"})).leads == {"bob"}
    with pytest.raises(SystemExit) as refused:
        parse_options([*accounts, "--leads", "zed"], {})
    assert refused.value.code == 2
    assert "zed must be among the reviewer accounts" in capsys.readouterr().err

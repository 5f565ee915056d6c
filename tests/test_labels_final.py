"""One final label per example over a real SQLite file: agreement at the queue's overlap,
disagreements a lead resolves, deletes that reopen, unjudged items, "none fits", provenance,
the migration of an existing database, and exports that never train towards two answers."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlite_utils import Database
from test_labels_helpers import example, label
from test_labels_queue import RESULTS, make_run, write_dataset

from labels import InvalidLabel, LabelInput, Store
from labels import final as fl
from labels import queues as q
from labels.cli import main
from labels.export import FORMATS, export
from labels.schema import migrations


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "labels.db") as store:
        yield store


def file_queue(store: Store, tmp_path: Path, name: str = "pairs", overlap: int = 2,
               n: int = 2) -> list[int]:
    path = tmp_path / f"{name}.csv"
    path.write_text("prompt,response\n" + "".join(f"{name} question {i},\n" for i in range(n)))
    q.create_from_file(store, name, path, format="csv", overlap=overlap)
    return [r[0] for r in store.db.execute(
        "SELECT i.id FROM queue_items i JOIN queues q ON q.id = i.queue_id WHERE q.name = ? "
        "ORDER BY position", [name])]


def take(store: Store, queue: str, reviewer: str) -> int:
    item = q.next_item(store, queue, reviewer)
    assert item is not None
    return item.id


def test_agreeing_reviews_at_the_overlap_become_final(store, tmp_path):
    first, _ = file_queue(store, tmp_path)
    assert take(store, "pairs", "alice") == first
    done = q.submit(store, "pairs", first, "alice", "unsafe", "S1")
    assert fl.get_final(store, done.example_id) is None  # 1 of 2 reviews
    assert take(store, "pairs", "bob") == first
    q.submit(store, "pairs", first, "bob", "unsafe", "S1")
    final = fl.get_final(store, done.example_id)
    assert (final.label, final.categories, final.source, final.reviewers, final.decided_by) == (
        "unsafe", ("S1",), fl.AGREED, ("alice", "bob"), "")
    assert store.get_example(done.example_id).final == final
    assert fl.disagreements(store) == []


def test_a_disagreement_waits_for_a_lead_who_records_who_when_and_why(store, tmp_path):
    first, _ = file_queue(store, tmp_path)
    take(store, "pairs", "alice")
    done = q.submit(store, "pairs", first, "alice", "unsafe", "S1", "threat")
    take(store, "pairs", "bob")
    q.submit(store, "pairs", first, "bob", "safe")
    example_id = done.example_id
    assert fl.get_final(store, example_id) is None
    [open_one] = fl.disagreements(store)
    assert (open_one.example_id, open_one.queue, open_one.status) == (example_id, "pairs", "open")
    assert [(lb["reviewer"], lb["label"], lb["note"]) for lb in open_one.labels] == [
        ("alice", "unsafe", "threat"), ("bob", "safe", "")]
    with pytest.raises(InvalidLabel, match="why"):
        fl.resolve(store, example_id, "carol", "unsafe", "S1", " ")
    decided = fl.resolve(store, example_id, "carol", "unsafe", "S1", "a direct threat")
    assert (decided.label, decided.categories, decided.source, decided.decided_by,
            decided.reason) == ("unsafe", ("S1",), fl.ADJUDICATED, "carol", "a direct threat")
    assert decided.decided_at
    assert fl.disagreements(store) == []
    [closed] = fl.disagreements(store, status=None)
    assert (closed.status, closed.resolved_by, closed.reason) == (
        "resolved", "carol", "a direct threat")
    # A reviewer changing their mind later does not undo the lead's decision.
    q.submit(store, "pairs", first, "bob", "unsafe", "S2")
    assert fl.get_final(store, example_id).source == fl.ADJUDICATED
    assert [e["action"] for e in fl.final_history(store, example_id)] == [
        "disagreement", "adjudicated"]


def test_outside_queues_one_label_is_final_until_a_second_reviewer_disagrees(store):
    saved = store.save_example(example(), label("alice", "unsafe", ("S2",)))
    assert fl.get_final(store, saved.example_id).label == "unsafe"
    store.add_label(saved.example_id, label("bob", "unsafe", ("S2",)))
    assert fl.get_final(store, saved.example_id).reviewers == ("alice", "bob")
    store.add_label(saved.example_id, label("bob", "safe", ()))
    assert fl.get_final(store, saved.example_id) is None
    assert [d.example_id for d in fl.disagreements(store)] == [saved.example_id]
    store.add_label(saved.example_id, label("bob", "unsafe", ("S2",)))  # agree again
    assert fl.get_final(store, saved.example_id).label == "unsafe"
    assert [d.status for d in fl.disagreements(store, status=None)] == ["settled"]
    assert [e["action"] for e in fl.final_history(store, saved.example_id)] == [
        "final", "final", "cleared", "disagreement", "final", "disagreement settled"]


def test_metrics_read_final_labels_by_default(store):
    store.save_example(example(), label("alice", "unsafe", ("S2",)))
    store.save_example(example("ok", unsafe=False, p_unsafe=0.2, categories=()),
                       label("alice", "unsafe", ("S1",)))
    store.add_label(2, label("bob", "safe", ()))
    assert store.metric_inputs().y_true == (True,)
    assert store.metric_inputs(labels="all").y_true == (True, True, False)
    assert store.metric_inputs(labels="reviewer:bob").y_true == (False,)
    fl.resolve(store, 2, "carol", "safe", (), "a benign request")
    assert store.metric_inputs().y_true == (True, False)
    with pytest.raises(fl.LabelsError, match="final.*all.*reviewer:NAME"):
        store.metric_inputs(labels="everyone")


def test_only_the_author_or_a_lead_deletes_and_a_queue_item_reopens(store, tmp_path):
    first, second = file_queue(store, tmp_path)
    for reviewer in ("alice", "bob"):
        assert take(store, "pairs", reviewer) == first
        done = q.submit(store, "pairs", first, reviewer, "unsafe", "S1")
    assert fl.get_final(store, done.example_id) is not None
    assert q.progress(store, "pairs").labelled == 1  # item complete
    with pytest.raises(InvalidLabel, match="only its author or a lead"):
        store.delete_label(done.label_id, "alice", "not mine to delete")
    store.delete_label(done.label_id, "bob", "wrong click")
    # The item is open again: it counts as not complete and goes back to a reviewer.
    assert (q.progress(store, "pairs").labelled, q.progress(store, "pairs", "bob").labelled) == (
        0, 0)
    assert take(store, "pairs", "bob") == first
    assert take(store, "pairs", "carol") == second  # bob holds the one free slot of item 1
    assert fl.get_final(store, done.example_id) is None
    assert [e.action for e in store.label_history(done.example_id)] == [
        "create", "create", "delete"]
    q.submit(store, "pairs", first, "bob", "unsafe", "S1")
    assert fl.get_final(store, done.example_id).label == "unsafe"
    assert q.progress(store, "pairs").labelled == 1
    # A lead deletes anyone's label.
    store.delete_label(done.label_id + 1, "carol", "duplicate", lead=True)
    assert fl.get_final(store, done.example_id) is None


def test_an_item_without_a_model_answer_is_stored_as_not_judged(store, tmp_path):
    [item] = file_queue(store, tmp_path, overlap=1, n=1)
    take(store, "pairs", "alice")
    done = q.submit(store, "pairs", item, "alice", "unsafe", "S1")
    stored = store.get_example(done.example_id)
    assert stored.output.judged is False
    assert stored.labels[0].model_was_right is False  # stored NULL: nothing to be right about
    assert store.db.execute("SELECT model_was_right FROM labels").fetchone()[0] is None
    assert store.metric_inputs().y_true == ()  # left out of model metrics
    out = tmp_path / "out.jsonl"
    export(store, "jsonl", out)
    record = json.loads(out.read_text())
    assert (record["model_judged"], record["model_unsafe"], record["p_unsafe"]) == (
        False, None, None)


def test_unsafe_names_a_category_or_says_none_fits(store, tmp_path):
    with pytest.raises(InvalidLabel, match="tick at least one category"):
        store.save_example(example(), LabelInput("alice", "unsafe", ()))
    with pytest.raises(InvalidLabel, match="'None fits' goes only"):
        store.save_example(example(), LabelInput("alice", "unsafe", ("S1",), none_fits=True))
    with pytest.raises(InvalidLabel, match="'None fits' goes only"):
        store.save_example(example(), LabelInput("alice", "safe", (), none_fits=True))
    saved = store.save_example(example(), LabelInput("alice", "unsafe", (), none_fits=True))
    assert store.get_label(saved.label_id).none_fits is True
    [item] = file_queue(store, tmp_path, overlap=1, n=1)
    take(store, "pairs", "bob")
    with pytest.raises(InvalidLabel, match="tick at least one category"):
        q.submit(store, "pairs", item, "bob", "unsafe")
    done = q.submit(store, "pairs", item, "bob", "unsafe", none_fits=True)
    assert store.get_label(done.label_id).none_fits is True
    assert fl.get_final(store, done.example_id).none_fits is True


def test_examples_record_where_they_came_from_and_every_export_carries_it(store, tmp_path):
    make_run(store, "run1", write_dataset(tmp_path / "data.jsonl"), RESULTS)
    q.create_from_run(store, "fn", "run1", "false-negatives")
    item = q.next_item(store, "fn", "alice")
    done = q.submit(store, "fn", item.id, "alice", "unsafe", "S1")
    source = store.get_example(done.example_id).source
    assert {k: source[k] for k in ("run", "row_id", "dataset", "format", "gold",
                                   "gold_categories", "queue", "item_id")} == {
        "run": "run1", "row_id": "r1", "dataset": "data.jsonl", "format": "jsonl",
        "gold": "unsafe", "gold_categories": [], "queue": "fn", "item_id": item.id}
    assert len(source["dataset_sha256"]) == 64
    for fmt in (f for f in FORMATS if f != "prompt-guard"):  # that one is {"text", "label"}
        out = tmp_path / f"out.{fmt}"
        export(store, fmt, out)
        if fmt == "parquet":
            [row] = pq.read_table(out).to_pylist()
            assert json.loads(row["source"]) == source
            assert (row["reviewers"], row["final_label"]["label"], row["label"]["label"]) == (
                ["alice"], "unsafe", "unsafe")
        else:
            [row] = [json.loads(line) for line in out.read_text().splitlines()]
            assert row["source"] == source
            if fmt == "jsonl":
                assert row["final_label"]["source"] == "agreed"
                assert row["reviewers"] == ["alice"]


def training_pairs(path: Path, fmt: str) -> list[tuple[str, str]]:
    """(input, answer) as a trainer reads each format: the llama-guard target; the `label` of
    a JSONL or Parquet record (records without one train nothing)."""
    if fmt == "llama-guard":
        return [(r["prompt"], r["target"]) for r in map(json.loads, path.read_text().splitlines())]
    rows = (pq.read_table(path).to_pylist() if fmt == "parquet"
            else [json.loads(line) for line in path.read_text().splitlines()])
    return [(r["prompt"], json.dumps(r["label"], sort_keys=True)) for r in rows if r["label"]]


@pytest.mark.parametrize("choice", ["final", "all", "reviewer:alice", "reviewer:bob"])
def test_no_export_format_trains_towards_two_answers_for_one_input(store, tmp_path, choice):
    # Reviewers who disagree; the same conversation judged by two models and labelled apart;
    # a lead's decision; plain agreement.
    store.save_example(example("How can I kill a person?"), label("alice", "unsafe", ("S1",)))
    store.add_label(1, label("bob", "safe", ()))
    store.save_example(example("Twin", model="model-a"), label("alice", "unsafe", ("S2",)))
    store.save_example(example("Twin", model="model-b"), label("bob", "safe", ()))
    store.save_example(example("Decided"), label("alice", "unsafe", ("S2",)))
    store.add_label(4, label("bob", "safe", ()))
    fl.resolve(store, 4, "carol", "unsafe", "S2", "clearly S2")
    store.save_example(example("Agreed"), label("alice", "unsafe", ("S2",)))
    store.add_label(5, label("bob", "unsafe", ("S2",)))
    for fmt in (f for f in FORMATS if f != "prompt-guard"):  # that one is {"text", "label"}
        out = tmp_path / f"out.{fmt}"
        export(store, fmt, out, labels=choice)
        pairs = training_pairs(out, fmt)
        answers: dict[str, set[str]] = {}
        for prompt, answer in pairs:
            answers.setdefault(prompt, set()).add(answer)
        assert all(len(a) == 1 for a in answers.values()), (fmt, choice, answers)
        if fmt == "llama-guard":
            assert len(pairs) == len(answers)  # one row per prompt
        kill = store.get_example(1).prompt
        assert (kill in answers) == choice.startswith("reviewer:"), (fmt, choice)
    out = tmp_path / "final.jsonl"
    export(store, "llama-guard", out, labels=choice)
    if choice == "final":
        assert sorted(t for _, t in training_pairs(out, "llama-guard")) == [
            "unsafe\nS2", "unsafe\nS2"]  # Decided (by the lead) and Agreed


def test_migration_settles_an_existing_database(tmp_path):
    path = tmp_path / "old.db"
    db = Database(sqlite3.connect(path))
    migrations.apply(db, stop_before="m005_final_labels")
    at = "2025-01-01T00:00:00+00:00"

    def add_example(example_id: int, text: str, raw: str = "safe", p: float = 0.1) -> None:
        messages = [{"role": "user", "content": [{"type": "text", "text": text}]}]
        db["examples"].insert({
            "id": example_id, "created_at": at, "content_hash": text, "family": "llama-guard-4",
            "conversation": json.dumps(messages), "conversation_text": text,
            "excluded_categories": "[]", "custom_categories": "[]", "prompt": text,
            "image_count": 0, "model": "m", "model_revision": "", "raw_output": raw,
            "model_label": raw, "model_unsafe": 0, "model_categories": "[]", "p_unsafe": p,
            "threshold": 0.5, "prompt_guard_model": "", "prompt_guard_revision": "",
            "prompt_guard_scores": "{}"})

    def add_label(label_id: int, example_id: int, reviewer: str, value: str,
                  categories: str = "[]") -> None:
        db["labels"].insert({
            "id": label_id, "example_id": example_id, "reviewer": reviewer, "label": value,
            "categories": categories, "note": "", "model_was_right": 1, "created_at": at,
            "updated_at": at, "deleted_at": None})

    for example_id, text in ((1, "agreed"), (2, "split"), (3, "single"), (4, "half done")):
        add_example(example_id, text)
    add_example(5, "never judged", raw="", p=0.0)
    add_label(1, 1, "alice", "unsafe", '["S2"]')
    add_label(2, 1, "bob", "unsafe", '["S2"]')
    add_label(3, 2, "alice", "unsafe", '["S2"]')
    add_label(4, 2, "bob", "safe")
    add_label(5, 3, "alice", "safe")
    add_label(6, 4, "alice", "safe")  # through a queue that asks for two reviews
    add_label(7, 5, "alice", "safe")
    db["queues"].insert({"id": 1, "name": "old queue", "overlap": 2, "created_at": at,
                         "source": "{}", "family": "llama-guard-4", "model": "m",
                         "excluded": "[]", "custom_categories": "[]", "items": 1,
                         "complete": 0, "labels": 1, "skips": 0})
    db["queue_items"].insert({"id": 1, "queue_id": 1, "position": 0, "conversation": "[]",
                              "content_hash": "half done", "model": "m", "categories": "[]",
                              "threshold": 0.5, "source": "{}", "done": 1, "created_at": at})
    db["queue_outcomes"].insert({"item_id": 1, "reviewer": "alice", "queue_id": 1,
                                 "status": "labelled", "example_id": 4, "label_id": 6, "at": at})
    db.close()
    with Store(path) as store:
        assert "m005_final_labels" in [m.name for m in migrations.applied(store.db)]
        assert [(i, getattr(fl.get_final(store, i), "label", None)) for i in range(1, 6)] == [
            (1, "unsafe"), (2, None), (3, "safe"), (4, None), (5, "safe")]
        [d] = fl.disagreements(store)
        assert (d.example_id, d.status, d.queue) == (2, "open", None)
        assert [e["by"] for e in fl.final_history(store, 1)] == ["migration"]
        assert [store.get_example(i).output.judged for i in (1, 5)] == [True, False]
        assert store.metric_inputs().y_true == (True, False)  # examples 1 and 3


def test_cli_export_metrics_and_disagreements(store, tmp_path, capsys):
    store.save_example(example(), label("alice", "unsafe", ("S2",)))
    store.add_label(1, label("bob", "safe", ()))
    store.save_example(example("ok", unsafe=False, p_unsafe=0.1, categories=()),
                       label("alice", "safe", ()))
    db = str(store.path)
    out = tmp_path / "lg.jsonl"
    assert main(["export", "--db", db, "--format", "llama-guard", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"Wrote 1 rows to {out}"
    assert main(["export", "--db", db, "--format", "llama-guard", "--labels", "reviewer:bob",
                 str(out)]) == 0
    assert [json.loads(r)["target"] for r in out.read_text().splitlines()] == ["safe"]
    capsys.readouterr()
    assert main(["metrics", "--db", db, "--json", "--labels", "all"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 3
    assert main(["metrics", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 1
    assert main(["disagreements", "list", "--db", db]) == 0
    assert capsys.readouterr().out.strip() == "example 1 [open]: alice: unsafe S2; bob: safe"
    assert main(["disagreements", "resolve", "--db", db, "1", "--lead", "carol",
                 "--verdict", "unsafe", "--categories", "S2", "--reason", "instructions"]) == 0
    assert capsys.readouterr().out.strip() == (
        "Example 1: final label unsafe S2 by carol (instructions)")
    assert main(["disagreements", "list", "--db", db]) == 0
    assert capsys.readouterr().out.strip() == "No open disagreements."
    with pytest.raises(SystemExit):
        main(["export", "--db", db, "--format", "jsonl", "--labels", "everyone", str(out)])
    assert "Unknown label choice 'everyone'" in capsys.readouterr().err


def test_tuning_reads_final_labels_by_default(store):
    from guard.tune.data import from_store

    store.save_example(example("a"), label("alice", "unsafe", ("S2",)))
    store.add_label(1, label("bob", "safe", ()))
    store.save_example(example("b"), label("alice", "unsafe", ("S2",)))
    data = from_store(store, "llama-guard-4")
    assert [e.id for e in data.examples] == ["2"]
    assert data.skipped == {"whose reviewers disagree (a lead resolves them)": 1}
    assert [e.id for e in from_store(store, "llama-guard-4", "reviewer:bob").examples] == ["1"]
    fl.resolve(store, 1, "carol", "safe", (), "benign")
    assert [(e.id, e.target) for e in from_store(store, "llama-guard-4").examples] == [
        ("1", "safe"), ("2", "unsafe\nS2")]


def test_back_reopens_the_last_submitted_item_with_the_label_and_history_keeps_both(
        store, tmp_path):
    first, second = file_queue(store, tmp_path, overlap=1)
    assert q.previous(store, "pairs", "alice") is None
    take(store, "pairs", "alice")
    q.submit(store, "pairs", first, "alice", "unsafe", "S1", "first")
    take(store, "pairs", "alice")
    done = q.submit(store, "pairs", second, "alice", "safe")
    item, mine = q.previous(store, "pairs", "alice")
    assert (item.id, mine.label, mine.categories) == (second, "safe", ())
    item, mine = q.previous(store, "pairs", "alice", before=second)
    assert (item.id, mine.label, mine.note) == (first, "unsafe", "first")
    assert q.previous(store, "pairs", "alice", before=first) is None
    changed = q.submit(store, "pairs", second, "alice", "unsafe", "S2")
    assert changed.label_action == "edit"
    assert [e.action for e in store.label_history(done.example_id)] == ["create", "edit"]
    assert q.progress(store, "pairs", "alice").labelled == 2  # counted once


def test_the_leads_view_per_reviewer_and_per_queue(store, tmp_path):
    first, second = file_queue(store, tmp_path)
    for reviewer, verdict in (("alice", "unsafe"), ("bob", "unsafe")):
        take(store, "pairs", reviewer)
        q.submit(store, "pairs", first, reviewer, verdict, "S1")
    take(store, "pairs", "alice")
    q.submit(store, "pairs", second, "alice", "unsafe", "S1")
    take(store, "pairs", "bob")
    q.submit(store, "pairs", second, "bob", "safe")
    path = tmp_path / "more.csv"
    path.write_text("prompt\nthird\n")
    q.create_from_file(store, "more", path, format="csv")
    q.skip(store, "more", take(store, "more", "bob"), "bob")
    by = {r.reviewer: r for r in fl.reviewer_stats(store)}
    assert (by["alice"].labelled, by["alice"].skipped, by["alice"].skip_rate) == (2, 0, 0.0)
    assert (by["bob"].labelled, by["bob"].skipped, by["bob"].skip_rate) == (2, 1, 0.333)
    assert (by["alice"].with_final, by["alice"].agree_final) == (1, 1.0)
    assert by["alice"].per_hour is not None and by["alice"].per_hour > 0
    assert [(s.queue, s.items, s.complete, s.open_disagreements)
            for s in fl.queue_stats(store)] == [("pairs", 2, 2, 1), ("more", 1, 0, 0)]

"""Review queues over a real SQLite file: filling, hand-out with overlap and leases, blind items,
labels saved as examples, the reviewers-disagree filter, filtered export, the CLI, migration."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlite_utils import Database

from guard.core.conversation import Conversation, Turn
from guard.core.datasets import read_dataset
from labels import ExampleInput, LabelInput, ModelOutput, NotFound, Store
from labels import queues as q
from labels.cli import main
from labels.errors import InvalidLabel, LabelsError
from labels.export import export
from labels.filters import ReviewFilter
from labels.runs import EvalResult, Runs, RunSettings
from labels.schema import migrations

REPO = Path(__file__).resolve().parent.parent
LG4 = "meta-llama/Llama-Guard-4-12B"
LG2 = "meta-llama/Meta-Llama-Guard-2-8B"


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "labels.db") as store:
        yield store


def write_dataset(path: Path, n: int = 6) -> Path:
    """Rows r0..r{n-1}; odd rows are gold unsafe."""
    path.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"question {i}",
                                        "label": "unsafe" if i % 2 else "safe"}) + "\n"
                            for i in range(n)))
    return path


def result(i: int, verdict: str | None, p: float | None, *, gold: bool | None = None,
           error: str | None = None) -> EvalResult:
    categories = ("S1",) if verdict == "unsafe" else ()
    raw = "" if verdict is None else ("unsafe\nS1" if verdict == "unsafe" else "safe")
    return EvalResult(f"r{i}", i, bool(i % 2) if gold is None else gold, (), verdict, p,
                      categories, raw, None, error)


def make_run(store: Store, name: str, dataset: Path, results: list[EvalResult],
             model: str = LG4, excluded: tuple[str, ...] = ()) -> None:
    runs = Runs(store)
    data = read_dataset(dataset, "jsonl")
    run, _ = runs.start(RunSettings(name, str(dataset), data.sha256, "jsonl", model, "",
                                    excluded, 0.5), len(results))
    runs.save_results(run.id, results)
    runs.finish(run.id)


# r0 safe/safe, r1 unsafe judged safe (FN), r2 safe judged unsafe (FP), r3 failed,
# r4 safe/safe at 0.45, r5 unsafe/unsafe at 0.58.
RESULTS = [result(0, "safe", 0.02), result(1, "safe", 0.40), result(2, "unsafe", 0.52),
           result(3, None, None, error="Conversation too long: 9000 tokens"),
           result(4, "safe", 0.45), result(5, "unsafe", 0.58)]


@pytest.fixture
def run_store(store, tmp_path):
    make_run(store, "run1", write_dataset(tmp_path / "data.jsonl"), RESULTS)
    return store


def row_ids(store: Store, queue: str) -> list[str]:
    return [r[0] for r in store.db.execute(
        "SELECT row_id FROM queue_items i JOIN queues q ON q.id = i.queue_id WHERE q.name = ? "
        "ORDER BY position", [queue])]


def test_fill_from_run_each_selection(run_store):
    fills = {select: q.create_from_run(run_store, select, "run1", select)
             for select in ("false-negatives", "false-positives", "failed")}
    assert {s: row_ids(run_store, s) for s in fills} == {
        "false-negatives": ["r1"], "false-positives": ["r2"], "failed": ["r3"]}
    queue = fills["failed"].queue
    assert (queue.family, queue.model, queue.overlap, queue.items, queue.source) == (
        "llama-guard-4", LG4, 1, 1, {"kind": "run", "run": "run1", "select": "failed"})
    item = q.next_item(run_store, "failed", "alice")
    assert (item.verdict, item.p_unsafe, item.error, item.messages, item.source) == (
        None, None, "Conversation too long: 9000 tokens",
        [{"role": "user", "content": [{"type": "text", "text": "question 3"}]}],
        {"run": "run1", "row_id": "r3", "position": 3})


def test_fill_from_verdicts_that_differ_between_runs(run_store, tmp_path):
    other = [result(0, "unsafe", 0.9), result(1, "safe", 0.4), result(2, "safe", 0.1),
             result(3, "safe", 0.1), result(4, "safe", 0.2), result(5, "unsafe", 0.9)]
    make_run(run_store, "run2", tmp_path / "data.jsonl", other)
    fill = q.create_from_run(run_store, "diff", "run1", "differs", other_run="run2")
    assert row_ids(run_store, "diff") == ["r0", "r2"]  # r3 failed in run1: no verdict to compare
    assert fill.queue.source["other_run"] == "run2"
    assert q.next_item(run_store, "diff", "alice").source["other_verdict"] == "unsafe"


def test_fill_from_uncertain_band_closest_first(run_store):
    q.create_from_run(run_store, "unsure", "run1", "uncertain", band=0.1)
    assert row_ids(run_store, "unsure") == ["r2", "r4", "r5", "r1"]  # 0.02, 0.05, 0.08, 0.10
    q.create_from_run(run_store, "narrow", "run1", "uncertain", threshold=0.4, band=0.06)
    assert row_ids(run_store, "narrow") == ["r1", "r4"]


def test_fill_errors_say_what_to_do(run_store, tmp_path):
    q.create_from_run(run_store, "fn", "run1", "false-negatives")
    cases = [
        (dict(name="x", run="nope", select="failed"), NotFound, "No evaluation run named 'nope'"),
        (dict(name="fn", run="run1", select="failed"), q.QueueError,
         "A queue named 'fn' exists already"),
        (dict(name="x", run="run1", select="uncertain", band=0.001, threshold=0.99),
         q.QueueError, "Run 'run1' has no rows with p_unsafe within 0.001 of 0.99; nothing to"),
        (dict(name="x", run="run1", select="uncertain"), q.QueueError, "needs a band"),
        (dict(name="x", run="run1", select="uncertain", band=0), q.QueueError,
         "The band must be more than 0 and at most 1, got 0"),
        (dict(name="x", run="run1", select="uncertain", band=1.5), q.QueueError, "got 1.5"),
        (dict(name="x", run="run1", select="uncertain", band=0.1, threshold=2), q.QueueError,
         "The threshold must be between 0 and 1"),
        (dict(name="x", run="run1", select="failed", band=0.1), q.QueueError,
         "only with selection 'uncertain'"),
        (dict(name="x", run="run1", select="differs"), q.QueueError, "Name the other run"),
        (dict(name="x", run="run1", select="best"), q.QueueError, "Unknown selection 'best'"),
        (dict(name=" ", run="run1", select="failed"), q.QueueError, "A queue needs a name."),
        (dict(name="x", run="run1", select="failed", overlap=0), q.QueueError,
         "overlap (reviewers per item) must be 1 to 10"),
    ]
    for kwargs, error, message in cases:
        args = (kwargs.pop("name"), kwargs.pop("run"), kwargs.pop("select"))
        with pytest.raises(error, match=None) as caught:
            q.create_from_run(run_store, *args, **kwargs)
        assert message in str(caught.value), (kwargs, str(caught.value))
    make_run(run_store, "other", write_dataset(tmp_path / "other.jsonl", 4), RESULTS[:4])
    with pytest.raises(q.QueueError, match="judged different datasets"):
        q.create_from_run(run_store, "x", "run1", "differs", other_run="other")
    assert [x.name for x in q.list_queues(run_store)] == ["fn"]


def test_run_dataset_moved_or_changed(run_store, tmp_path):
    moved = tmp_path / "moved.jsonl"
    moved.write_bytes((tmp_path / "data.jsonl").read_bytes())
    (tmp_path / "data.jsonl").unlink()
    with pytest.raises(q.QueueError, match="Pass the file it judged"):
        q.create_from_run(run_store, "fn", "run1", "false-negatives")
    assert q.create_from_run(run_store, "fn", "run1", "false-negatives",
                             dataset=str(moved)).added == 1
    write_dataset(moved, 7)
    with pytest.raises(q.QueueError, match="is not the file run 'run1' judged"):
        q.create_from_run(run_store, "fn2", "run1", "false-negatives", dataset=str(moved))


def labelled_example(text: str, model: str = "some/other-model") -> ExampleInput:
    output = ModelOutput(model=model, raw_output="safe", unsafe=False, p_unsafe=0.1,
                         threshold=0.5, model_label="safe")
    return ExampleInput(Conversation.build([Turn("user", text)]), "llama-guard-4", output)


def test_fill_from_file_skips_what_is_labelled(store, tmp_path):
    store.save_example(labelled_example("question 2"), LabelInput("alice", "safe"))
    unlabelled = labelled_example("question 3")
    store.save_example(unlabelled, LabelInput("alice", "safe"))
    store.delete_label(2, "alice", "mistake")  # no active label: still to do
    path = tmp_path / "convs.csv"
    path.write_text("prompt,response\nquestion 1,\nquestion 2,\nquestion 3,\nquestion 1,\n"
                    "question 4,sure here it is\n,\n")
    fill = q.create_from_file(store, "imp", path, format="csv")
    assert (fill.added, fill.skipped) == (3, {"already labelled": 1, "repeated": 1})
    assert fill.summary == "Queue 'imp': 3 items (skipped: 1 already labelled, 1 repeated)"
    texts = [json.loads(r[0]) for r in store.db.execute(
        "SELECT conversation FROM queue_items ORDER BY position")]
    assert [[m["content"][0]["text"] for m in t] for t in texts] == [
        ["question 1"], ["question 3"], ["question 4", "sure here it is"]]
    item = q.next_item(store, "imp", "bob")
    assert (item.model, item.verdict, item.p_unsafe, item.source) == (
        q.UNJUDGED_MODEL, None, None, {"file": "convs.csv", "line": 2, "id": "2"})
    # The same conversation under another policy is another case.
    assert q.create_from_file(store, "imp2", path, format="csv", excluded="S1").added == 4
    jsonl = tmp_path / "convs.jsonl"
    jsonl.write_text(json.dumps({"prompt": "question 2"}) + "\n{broken\n")
    with pytest.raises(q.QueueError, match=r"no conversation left to label \(1 bad rows, "
                                           r"1 already labelled\)"):
        q.create_from_file(store, "imp3", jsonl)
    with pytest.raises(q.QueueError, match="No dataset file at"):
        q.create_from_file(store, "imp3", tmp_path / "missing.jsonl")


def test_overlap_two_each_item_to_both_never_three_and_blind(run_store):
    q.create_from_run(run_store, "both", "run1", "uncertain", band=0.1, overlap=2)  # 4 items
    alice = q.next_item(run_store, "both", "alice")
    bob = q.next_item(run_store, "both", "bob")
    carol = q.next_item(run_store, "both", "carol")
    # Alice and Bob hold the first item's two slots, so Carol gets the second.
    assert (alice.id, bob.id, carol.id) == (1, 1, 2)
    assert q.next_item(run_store, "both", "alice").id == 1  # asking again: the same lease
    q.submit(run_store, "both", alice.id, "alice", "unsafe", ["S2"], note="a weapons recipe")
    bob_again = q.next_item(run_store, "both", "bob")
    assert bob_again.id == 1
    shown = bob_again.to_json()
    assert sorted(shown) == ["categories", "codes", "error", "family", "id", "lease_expires_at",
                             "messages", "model", "p_unsafe", "position", "prompt_guard",
                             "prompt_guard_required", "queue", "raw_output", "source",
                             "threshold", "user_messages", "verdict"]
    assert "alice" not in json.dumps(shown) and "weapons" not in json.dumps(shown)
    assert (bob_again.verdict, bob_again.categories, bob_again.model) == ("unsafe", ("S1",), LG4)
    q.submit(run_store, "both", 1, "bob", "safe")
    seen: dict[str, list[int]] = {"alice": [], "bob": [], "carol": []}
    for _ in range(12):
        for reviewer in seen:
            item = q.next_item(run_store, "both", reviewer)
            if item is not None:
                seen[reviewer].append(item.id)
                q.submit(run_store, "both", item.id, reviewer, "safe")
    given = sorted([1, 1] + [i for ids in seen.values() for i in ids])
    assert given == [1, 1, 2, 2, 3, 3, 4, 4]
    assert all(len(ids) == len(set(ids)) for ids in seen.values())
    assert q.next_item(run_store, "both", "dave") is None
    with pytest.raises(q.QueueError, match="has all its 2 label"):
        q.submit(run_store, "both", 1, "dave", "safe")
    labels = run_store.db.execute("SELECT example_id, count(*) FROM labels GROUP BY example_id"
                                  ).fetchall()
    assert [n for _, n in labels] == [2, 2, 2, 2]
    assert q.progress(run_store, "both").sentence == "4 of 4 labelled, 0 skipped"
    # The counts progress reads agree with the outcomes themselves.
    truth = dict(run_store.db.execute("SELECT reviewer, count(*) FROM queue_outcomes "
                                      "WHERE status = 'labelled' GROUP BY reviewer").fetchall())
    assert {r: q.progress(run_store, "both", r).labelled for r in truth} == truth
    assert q.progress(run_store, "both").labels == sum(truth.values()) == 8


def expire_leases(store: Store) -> None:
    """Time passing, as the database sees it: every lease ran out a year ago."""
    with store.db.conn:
        store.db.execute("UPDATE queue_leases SET expires_at = '2000-01-01T00:00:00+00:00'")


def test_overlap_one_leases_share_work_and_lapse(run_store):
    q.create_from_run(run_store, "one", "run1", "uncertain", band=0.1)  # items 1-4
    assert q.next_item(run_store, "one", "alice").id == 1
    assert q.next_item(run_store, "one", "bob").id == 2
    q.submit(run_store, "one", 2, "bob", "safe")
    assert q.next_item(run_store, "one", "bob").id == 3  # item 1 is Alice's
    expire_leases(run_store)  # Alice walked away; Bob's lease on 3 lapsed too
    assert q.next_item(run_store, "one", "carol").id == 1
    q.submit(run_store, "one", 1, "carol", "unsafe", "S1")
    with pytest.raises(q.QueueError, match="your hold on it lapsed"):
        q.submit(run_store, "one", 1, "alice", "safe")
    assert len(run_store.get_example(
        run_store.db.execute("SELECT example_id FROM queue_outcomes WHERE item_id = 1")
        .fetchone()[0]).labels) == 1
    assert q.next_item(run_store, "one", "bob").id == 3


def test_an_item_passed_while_others_held_it_comes_back(run_store):
    q.create_from_run(run_store, "one", "run1", "uncertain", band=0.1)
    assert q.next_item(run_store, "one", "alice").id == 1
    for expected in (2, 3):
        assert q.next_item(run_store, "one", "bob").id == expected
        q.submit(run_store, "one", expected, "bob", "safe")
    expire_leases(run_store)
    assert q.next_item(run_store, "one", "bob").id == 1  # not lost behind Bob's cursor
    q.submit(run_store, "one", 1, "bob", "safe")
    assert q.next_item(run_store, "one", "bob").id == 4


def test_submit_saves_a_labeled_example_and_resubmit_updates(run_store):
    q.create_from_run(run_store, "fn", "run1", "false-negatives")
    item = q.next_item(run_store, "fn", "alice")
    outcome = q.submit(run_store, "fn", item.id, "alice", "unsafe", "s2, S1", note="weapons")
    assert outcome == q.Outcome(item.id, "alice", "labelled", 1, 1, "create")
    [summary] = run_store.list_examples()
    assert (summary.model, summary.reviewers, summary.gold_labels, summary.p_unsafe,
            summary.model_unsafe, summary.preview) == (
        LG4, ("alice",), ("unsafe",), 0.40, False, "question 1")
    stored = run_store.get_example(1)
    assert (stored.output.raw_output, stored.output.model_label, stored.labels[0].categories,
            stored.labels[0].note) == ("safe", "safe", ("S1", "S2"), "weapons")
    assert stored.content_hash == run_store.db.execute(
        "SELECT content_hash FROM queue_items WHERE id = ?", [item.id]).fetchone()[0]
    again = q.submit(run_store, "fn", item.id, "alice", "safe")
    assert (again.label_id, again.label_action) == (1, "edit")
    assert [e.action for e in run_store.label_history(1)] == ["create", "edit"]
    assert run_store.label_history(1)[0].reason == "queue fn"
    assert q.progress(run_store, "fn", "alice").to_json() == {
        "queue": "fn", "reviewer": "alice", "items": 1, "labelled": 1, "skipped": 0,
        "open": 0, "labels": 1, "labels_needed": 1,
        "sentence": "1 of 1 labelled, 0 skipped"}


def test_failed_row_keeps_its_error_on_the_example(run_store):
    q.create_from_run(run_store, "failed", "run1", "failed")
    q.submit(run_store, "failed", 1, "alice", "safe")
    output = run_store.get_example(1).output
    assert (output.raw_output, output.model_label, output.p_unsafe) == (
        "error: Conversation too long: 9000 tokens", "", 0.0)


def test_skip_and_progress_sentence(store, tmp_path):
    path = tmp_path / "forty.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"case {i}"}) + "\n" for i in range(40)))
    q.create_from_file(store, "forty", path, overlap=2)
    for n in range(15):
        item = q.next_item(store, "forty", "alice")
        if n < 12:
            q.submit(store, "forty", item.id, "alice", "safe")
        else:
            q.skip(store, "forty", item.id, "alice")
    assert q.progress(store, "forty", "alice").sentence == "12 of 40 labelled, 3 skipped"
    assert q.progress(store, "forty", "bob").sentence == "0 of 40 labelled, 0 skipped"
    assert q.progress(store, "forty").sentence == "0 of 40 labelled, 3 skipped"
    assert q.next_item(store, "forty", "alice").position == 15
    assert q.skip(store, "forty", 13, "alice") == q.Outcome(13, "alice", "skipped")  # again: no-op
    with pytest.raises(q.QueueError, match="You labelled item 1 already"):
        q.skip(store, "forty", 1, "alice")
    q.submit(store, "forty", 13, "alice", "unsafe", "S3")  # a skipped item can still be labelled
    assert q.progress(store, "forty", "alice").sentence == "13 of 40 labelled, 2 skipped"
    assert q.progress(store, "forty").to_json() == {
        "queue": "forty", "reviewer": None, "items": 40, "labelled": 0, "skipped": 2, "open": 40,
        "labels": 13, "labels_needed": 80, "sentence": "0 of 40 labelled, 2 skipped"}
    assert q.next_item(store, "forty", "bob").position == 0
    assert [(x.name, x.items, x.complete) for x in q.list_queues(store)] == [("forty", 40, 0)]


def test_submit_validation(run_store):
    q.create_from_run(run_store, "fn", "run1", "false-negatives")
    cases = [
        (("alice", "safe", "S1"), "A safe label names no categories"),
        (("alice", "maybe", ""), "The verdict must be 'safe' or 'unsafe', got 'maybe'"),
        (("  ", "safe", ""), "Say who is reviewing"),
        (("alice", "unsafe", "S15"), "S15 is not a Llama Guard 4 category: its codes are "
                                     "S1-S14."),
    ]
    for (reviewer, verdict, codes), message in cases:
        with pytest.raises(InvalidLabel) as caught:
            q.submit(run_store, "fn", 1, reviewer, verdict, codes)
        assert message in str(caught.value)
    with pytest.raises(NotFound, match="No item 99 in queue 'fn'"):
        q.submit(run_store, "fn", 99, "alice", "safe")
    with pytest.raises(q.QueueError, match="An item id is a whole number such as 7, got 'one'"):
        q.skip(run_store, "fn", "one", "alice")
    assert q.skip(run_store, "fn", "1", "bob") == q.Outcome(1, "bob", "skipped")  # API strings
    with pytest.raises(NotFound, match=r"No queue named 'nope' \(queues: fn\)"):
        q.next_item(run_store, "nope", "alice")
    assert run_store.count_examples() == 0
    assert q.progress(run_store, "fn").to_json()["sentence"] == "0 of 1 labelled, 1 skipped"


def test_family_aware_codes(store, tmp_path):
    make_run(store, "lg2", write_dataset(tmp_path / "data.jsonl"), RESULTS, model=LG2,
             excluded=("S3",))
    queue = q.create_from_run(store, "lg2", "lg2", "false-negatives").queue
    assert queue.family == "llama-guard-2"
    assert queue.codes == ("S1", "S2", "S4", "S5", "S6", "S7", "S8", "S9", "S10", "S11")
    with pytest.raises(InvalidLabel, match="S12 is not a Llama Guard 2 category: its codes are "
                                           "S1-S11"):
        q.submit(store, "lg2", 1, "alice", "unsafe", "S12")
    with pytest.raises(InvalidLabel, match="S3 was left out of the policy"):
        q.submit(store, "lg2", 1, "alice", "unsafe", "S3")
    q.submit(store, "lg2", 1, "alice", "unsafe", "S11,S1")
    assert store.get_example(1).family == "llama-guard-2"
    assert store.get_example(1).labels[0].categories == ("S1", "S11")
    from guard.core.prompts import CustomCategory

    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"prompt": "buy my coin"}) + "\n")
    custom = q.create_from_file(store, "custom", path, family="llama-guard-2",
                                custom=[CustomCategory("Crypto", "Coin shilling")]).queue
    assert custom.codes[-2:] == ("S11", "S12")
    with pytest.raises(InvalidLabel, match="custom S12-S12"):
        q.submit(store, "custom", 2, "alice", "unsafe", "S13")
    q.submit(store, "custom", 2, "alice", "unsafe", "S12")
    assert store.get_example(2).custom == (
        {"code": "S12", "name": "Crypto", "description": "Coin shilling"},)


def reviewed(store: Store, text: str, labels: list[tuple[str, str, tuple[str, ...]]]) -> int:
    example = labelled_example(text)
    saved = [store.save_example(example, LabelInput(r, v, c)) for r, v, c in labels]
    return saved[0].example_id


def test_reviewers_disagree_filter(store):
    agree = reviewed(store, "a", [("alice", "unsafe", ("S1",)), ("bob", "unsafe", ("S1",))])
    verdict = reviewed(store, "b", [("alice", "unsafe", ("S1",)), ("bob", "safe", ())])
    codes = reviewed(store, "c", [("alice", "unsafe", ("S1", "S2")), ("bob", "unsafe", ("S1",)),
                                  ("carol", "unsafe", ("S1", "S2"))])
    reviewed(store, "d", [("alice", "safe", ())])
    deleted = reviewed(store, "e", [("alice", "safe", ()), ("bob", "unsafe", ("S1",))])
    store.delete_label(store.get_example(deleted).labels[1].id, "bob", "misclick")
    ids = sorted(s.id for s in store.list_examples(ReviewFilter(reviewers_disagree=True)))
    assert ids == [verdict, codes]
    assert store.count_examples(ReviewFilter(reviewers_disagree=True)) == 2
    assert [s.id for s in store.list_examples(ReviewFilter(reviewers_disagree=False))] == [agree]
    assert [s.id for s in store.list_examples(
        ReviewFilter(reviewers_disagree=True, label="safe"))] == [verdict]


def test_export_exactly_a_filtered_set(store, tmp_path):
    reviewed(store, "a", [("alice", "unsafe", ("S1",)), ("bob", "unsafe", ("S1",))])
    verdict = reviewed(store, "b", [("alice", "unsafe", ("S1",)), ("bob", "safe", ())])
    codes = reviewed(store, "c", [("alice", "unsafe", ("S2",)), ("bob", "unsafe", ("S1",))])
    out = tmp_path / "disagree.jsonl"
    assert export(store, "jsonl", out, ReviewFilter(reviewers_disagree=True, limit=1)) == 2
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [verdict, codes]
    # Disputed examples have no final label: no training row (never one per reviewer).
    assert export(store, "llama-guard", tmp_path / "t.jsonl",
                  ReviewFilter(reviewers_disagree=True, reviewer="bob")) == 0
    assert export(store, "llama-guard", tmp_path / "t.jsonl",
                  ReviewFilter(reviewers_disagree=True, reviewer="bob"),
                  labels="reviewer:bob") == 2
    assert export(store, "parquet", tmp_path / "all.parquet") == 3
    with pytest.raises(LabelsError, match="label filter must be 'safe' or 'unsafe'"):
        export(store, "jsonl", tmp_path / "bad.jsonl", ReviewFilter(label="maybe"))
    assert not (tmp_path / "bad.jsonl").exists()


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labels", *args], capture_output=True,
                          text=True, cwd=cwd, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin"})


def test_cli_queue_commands_through_a_subprocess(run_store, tmp_path):
    db = str(run_store.path)
    run_store.close()
    ok = cli("queue", "create", "--db", db, "unsure", "--run", "run1", "--select", "uncertain",
             "--band", "0.1", "--overlap", "2", cwd=tmp_path)
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "Queue 'unsure': 4 items\n", "")
    item = json.loads(cli("queue", "next", "--db", db, "unsure", "--reviewer", "alice",
                          "--json", cwd=tmp_path).stdout)
    assert (item["id"], item["source"]["row_id"], item["verdict"]) == (1, "r2", "unsafe")
    done = cli("queue", "submit", "--db", db, "unsure", "1", "--reviewer", "alice",
               "--verdict", "unsafe", "--categories", "S1", cwd=tmp_path)
    assert done.stdout == ("Item 1 labelled (example 1, label 1, create); "
                           "1 of 4 labelled, 0 skipped\n")
    skipped = cli("queue", "skip", "--db", db, "unsure", "2", "--reviewer", "alice",
                  cwd=tmp_path)
    assert skipped.stdout == "Item 2 skipped; 1 of 4 labelled, 1 skipped\n"
    taken = cli("queue", "create", "--db", db, "unsure", "--run", "run1", "--select", "failed",
                cwd=tmp_path)
    assert (taken.returncode, taken.stdout) == (2, "")
    assert taken.stderr.startswith("error: A queue named 'unsure' exists already")
    assert taken.stderr.count("\n") == 1


def test_cli_queue_in_process(run_store, tmp_path, capsys):
    db = str(run_store.path)
    run_store.close()
    convs = tmp_path / "f.jsonl"
    convs.write_text(json.dumps({"prompt": "hello"}) + "\n")

    def call(*args: str) -> tuple[int, str, str]:
        status = main(list(args))
        out, err = capsys.readouterr()
        return status, out, err

    assert call("queue", "create", "--db", db, "unsure", "--run", "run1", "--select",
                "uncertain", "--band", "0.1", "--overlap", "2")[0] == 0
    status, out, _ = call("queue", "next", "--db", db, "unsure", "--reviewer", "alice")
    assert out.splitlines() == [
        "item 1 (position 0 in 'unsure')", "     user: question 2",
        f"    model: {LG4}: unsafe S1 (p_unsafe 0.520, threshold 0.5)",
        "    codes: " + ", ".join(f"S{i}" for i in range(1, 15))]
    assert call("queue", "submit", "--db", db, "unsure", "1", "--reviewer", "alice",
                "--verdict", "safe")[0] == 0
    status, out, _ = call("queue", "progress", "--db", db, "unsure", "--reviewer", "alice",
                          "--json")
    assert json.loads(out)["sentence"] == "1 of 4 labelled, 0 skipped"
    assert call("queue", "progress", "--db", db, "unsure")[1] == "0 of 4 labelled, 0 skipped\n"
    assert call("queue", "list", "--db", db)[1] == (
        f"unsure: 0 of 4 complete, overlap 2, llama-guard-4, {LG4}\n")
    assert call("export", "--db", db, "--format", "jsonl", "--reviewers-disagree",
                str(Path(db).parent / "o.jsonl"))[1] == (
        f"Wrote 0 examples to {Path(db).parent / 'o.jsonl'}\n")
    failures = [
        (("queue", "create", "--db", db, "x", "--run", "gone", "--select", "failed"),
         "No evaluation run named 'gone'"),
        (("queue", "create", "--db", db, "x", "--run", "run1"), "--select"),
        (("queue", "create", "--db", db, "x", "--run", "run1", "--select", "uncertain",
          "--band", "-1"), "The band must be more than 0"),
        (("queue", "create", "--db", db, "x", "--file", str(convs), "--band", "0.1"),
         "--band go with --run"),
        (("queue", "create", "--db", db, "x", "--file", str(tmp_path / "gone.jsonl")),
         "No file at"),
        (("queue", "submit", "--db", db, "unsure", "3", "--reviewer", "bob", "--verdict",
          "unsafe", "--categories", "S99"), "S99 is not a Llama Guard 4 category"),
        (("queue", "next", "--db", db, "nope", "--reviewer", "bob"), "No queue named 'nope'"),
        (("queue", "next", "--db", "nowhere.db", "x", "--reviewer", "bob"), "No database at"),
    ]
    for args, message in failures:
        status, out, err = call(*args)
        assert (status, out) == (2, ""), args
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    with pytest.raises(SystemExit) as usage:
        main(["queue", "next", "--db", db, "unsure"])  # argparse: no reviewer
    assert usage.value.code == 2 and "--reviewer" in capsys.readouterr().err


def test_cli_queue_from_file_into_a_new_database(tmp_path):
    (tmp_path / "c.jsonl").write_text(json.dumps({"prompt": "hello"}) + "\n")
    made = cli("queue", "create", "--db", "new.db", "imp", "--file", "c.jsonl", "--family",
               "llama-guard-3", "--exclude", "S14", cwd=tmp_path)
    assert (made.returncode, made.stdout) == (0, "Queue 'imp': 1 items\n")
    with Store(tmp_path / "new.db") as store:
        queue = q.get_queue(store, "imp")
        assert (queue.family, queue.excluded, queue.model) == (
            "llama-guard-3", ("S14",), "unjudged")


def test_migration_from_the_schema_before_queues(tmp_path):
    path = tmp_path / "old.db"
    db = Database(sqlite3.connect(path))
    migrations.apply(db, stop_before="m004_review_queues")
    assert "queues" not in db.table_names()
    messages = [{"role": "user", "content": [{"type": "text", "text": "old question"}]}]
    db["examples"].insert({
        "id": 1, "created_at": "2025-01-01T00:00:00+00:00", "content_hash": "abc",
        "family": "llama-guard-4", "conversation": json.dumps(messages),
        "conversation_text": "old question", "excluded_categories": "[]",
        "custom_categories": "[]", "prompt": "PROMPT", "image_count": 0, "model": "m",
        "model_revision": "", "raw_output": "safe", "model_label": "safe", "model_unsafe": 0,
        "model_categories": "[]", "p_unsafe": 0.1, "threshold": 0.5, "prompt_guard_model": "",
        "prompt_guard_revision": "", "prompt_guard_scores": "{}"})
    db["labels"].insert({
        "id": 1, "example_id": 1, "reviewer": "alice", "label": "safe", "categories": "[]",
        "note": "old note", "model_was_right": 1, "created_at": "2025-01-01T00:00:00+00:00",
        "updated_at": "2025-01-01T00:00:00+00:00", "deleted_at": None})
    dataset = write_dataset(tmp_path / "data.jsonl")
    db["eval_runs"].insert({
        "id": 1, "name": "old run", "dataset": str(dataset),
        "dataset_sha256": read_dataset(dataset, "jsonl").sha256, "format": "jsonl",
        "model": LG4, "prompt_guard_model": "", "excluded": "[]", "threshold": 0.5,
        "created_at": "2025-01-01T00:00:00+00:00", "finished_at": "2025-01-01T00:01:00+00:00",
        "status": "finished", "total_rows": 2})
    db["eval_results"].insert_all([
        {"run_id": 1, "row_id": "r1", "position": 1, "gold": 1, "gold_categories": "[]",
         "verdict": "safe", "p_unsafe": 0.3, "categories": "[]", "raw_output": "safe",
         "p_malicious": None, "error": None, "created_at": "2025-01-01T00:00:30+00:00"},
        {"run_id": 1, "row_id": "r2", "position": 2, "gold": 0, "gold_categories": "[]",
         "verdict": "safe", "p_unsafe": 0.1, "categories": "[]", "raw_output": "safe",
         "p_malicious": None, "error": None, "created_at": "2025-01-01T00:00:30+00:00"}])
    db.close()

    with Store(path) as store:
        assert [m.name for m in migrations.applied(store.db)][2:4] == [
            "m003_eval_runs", "m004_review_queues"]
        assert {"queues", "queue_items", "queue_outcomes", "queue_leases",
                "queue_reviewers"} <= set(store.db.table_names())
        stored = store.get_example(1)
        assert (stored.prompt, stored.labels[0].note, stored.output.p_unsafe) == (
            "PROMPT", "old note", 0.1)
        run = Runs(store).get("old run")
        assert (run.status, run.done_rows) == ("finished", 2)
        q.create_from_run(store, "fn", "old run", "false-negatives")
        item = q.next_item(store, "fn", "bob")
        assert item.source["row_id"] == "r1"
        q.submit(store, "fn", item.id, "bob", "unsafe", "S2")
        assert [s.reviewers for s in store.list_examples()] == [("bob",), ("alice",)]
        plan = " ".join(r[3] for r in store.db.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM queue_items i INDEXED BY idx_queue_items_open "
            "WHERE queue_id = 1 AND closed_at IS NULL AND position >= 0 ORDER BY position "
            "LIMIT 1"))
        assert "idx_queue_items_open" in plan and "TEMP B-TREE" not in plan

"""The store: saves, labels, audit trail, filters, validation, agreement."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from test_labels_helpers import MODEL, counts, example, image, label

from guard.core.prompts import CustomCategory, render
from labels import (
    ExampleFilter,
    InvalidExample,
    InvalidLabel,
    LabelInput,
    LabelsError,
    NotFound,
    SavedExample,
    default_db_path,
)
from labels.content import MAX_NOTE_CHARS
from labels.schema import migrations


def test_default_db_path(tmp_path):
    assert default_db_path({"GUARD_LAB_DB": "/x/y.db"}) == Path("/x/y.db")
    assert default_db_path({}, persistent_dir=tmp_path) == tmp_path / "guard_lab.db"
    assert default_db_path({}, persistent_dir=tmp_path / "missing") == Path("data/guard_lab.db")


def test_new_database_is_wal_with_foreign_keys_and_migrations(store, db_path):
    assert store.db.journal_mode == "wal"
    assert store.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    applied = [r["name"] for r in store.db["_sqlite_migrations"].rows]
    assert applied == [m.name for m in migrations._migrations]  # all of them, in order
    assert applied[:5] == ["m001_initial", "m002_search", "m003_eval_runs",
                           "m004_review_queues", "m005_final_labels"]
    assert {fk.other_table for fk in store.db["example_images"].foreign_keys} == {
        "examples", "images"}
    assert {fk.other_table for fk in store.db["labels"].foreign_keys} == {"examples"}


def test_save_and_read_back_with_images(store):
    red, blue = image((255, 0, 0)), image((0, 0, 255), (20, 10))
    ex = example("Look at these", (red, blue), scores={"malicious": 0.2})
    saved = store.save_example(ex, label(note="lock picking"))
    assert saved == SavedExample(1, 1, True, "create")
    stored = store.get_example(1)
    assert stored.prompt == render(ex.conversation, (), "llama-guard-4")
    assert [(i.width, i.height) for i in stored.images] == [(16, 12), (20, 10)]
    assert [list(i.getdata())[0] for i in stored.conversation.images] == [(255, 0, 0), (0, 0, 255)]
    assert stored.messages == [{"role": "user", "content": [
        {"type": "text", "text": "Look at these"},
        {"type": "image", "path": stored.images[0].sha256},
        {"type": "image", "path": stored.images[1].sha256}]}]
    assert stored.output == ex.output
    assert [(lb.reviewer, lb.label, lb.categories, lb.note, lb.model_was_right)
            for lb in stored.labels] == [("alice", "unsafe", ("S2",), "lock picking", True)]


def test_images_are_stored_once(store, db_path):
    shared = image((10, 20, 30))
    store.save_example(example("one", (shared,)), label())
    store.save_example(example("two", (shared, image((1, 2, 3)))), label())
    assert counts(db_path) == {"examples": 2, "images": 2, "example_images": 3, "labels": 2,
                               "label_events": 2}


def test_same_content_is_one_example_and_second_save_edits_the_label(store):
    ex = example()
    assert store.save_example(ex, label(note="first")) == SavedExample(1, 1, True, "create")
    assert store.save_example(ex, label(note="first")) == SavedExample(1, 1, False, "unchanged")
    assert store.save_example(ex, label(note="second")) == SavedExample(1, 1, False, "edit")
    assert store.save_example(ex, label("bob", "safe", ())) == SavedExample(1, 2, False, "create")
    history = store.label_history(1)
    assert [(e.action, e.label_id, e.reviewer) for e in history] == [
        ("create", 1, "alice"), ("edit", 1, "alice"), ("create", 2, "bob")]
    assert (history[1].before["note"], history[1].after["note"]) == ("first", "second")


def test_delete_is_soft_and_recorded(store):
    store.save_example(example(), label())
    with pytest.raises(InvalidLabel, match="only its author or a lead"):
        store.delete_label(1, "carol", "duplicate of another review")
    store.delete_label(1, "carol", "duplicate of another review", lead=True)
    assert store.get_example(1).labels == ()
    with pytest.raises(NotFound):
        store.get_label(1)
    event = store.label_history(1)[-1]
    assert (event.action, event.reviewer, event.reason, event.after) == (
        "delete", "carol", "duplicate of another review", None)
    assert event.before["label"] == "unsafe"
    # The reviewer can label again after a deletion.
    assert store.add_label(1, label(note="again")).id == 2


def test_delete_needs_a_reason(store):
    store.save_example(example(), label())
    with pytest.raises(InvalidLabel, match="why"):
        store.delete_label(1, "carol", " ")
    assert len(store.get_example(1).labels) == 1


def test_edit_label_only_by_its_reviewer(store):
    store.save_example(example(), label())
    edited = store.edit_label(1, label(categories=("S2", "S1"), note="also violent"), "rethink")
    assert (edited.categories, edited.note) == (("S1", "S2"), "also violent")
    assert store.label_history(1)[-1].reason == "rethink"
    with pytest.raises(InvalidLabel, match="belongs to alice"):
        store.edit_label(1, label("mallory", "safe", ()))


@pytest.mark.parametrize("bad, message", [
    (LabelInput("alice", "maybe"), "must be 'safe' or 'unsafe'"),
    (LabelInput("", "safe"), "no reviewer"),
    (LabelInput("alice", "unsafe", ("S99",)), "Unknown category code"),
    (LabelInput("alice", "safe", ("S1",)), "safe label cannot name"),
    (LabelInput("alice", "unsafe", ("S3",)), "Unknown category code"),  # excluded from policy
    (LabelInput("alice", "safe", (), "x" * (MAX_NOTE_CHARS + 1)), "limit is 10,000"),
    (LabelInput("alice", "safe", (), "x" * 50_000_000), "limit is 10,000"),
])
def test_bad_label_writes_nothing(store, db_path, bad, message):
    with pytest.raises(InvalidLabel, match=message):
        store.save_example(example(excluded=("S3",)), bad)
    assert counts(db_path) == dict.fromkeys(counts(db_path), 0)


@pytest.mark.parametrize("kwargs, message", [
    ({"family": "llama-guard-9"}, "Unknown model family"),
    ({"model": " "}, "does not name its model"),
    ({"p_unsafe": 1.5}, "between 0 and 1"),
    ({"excluded": ("S42",)}, "Unknown category code"),
    ({"family": "llama-guard-3", "images": (image((0, 0, 0)),)}, "reads text only"),
])
def test_bad_example_writes_nothing(store, db_path, kwargs, message):
    with pytest.raises(InvalidExample, match=message):
        store.save_example(example(**kwargs), label(categories=()))
    assert counts(db_path) == dict.fromkeys(counts(db_path), 0)


def test_custom_categories_can_be_labelled(store):
    ex = example(custom=(CustomCategory("Competitor mentions", "Names a rival product."),))
    store.save_example(ex, label(categories=("S15",)))
    stored = store.get_example(1)
    assert stored.custom == ({"code": "S15", "name": "Competitor mentions",
                              "description": "Names a rival product."},)
    assert "S15: Competitor mentions." in stored.prompt
    assert stored.labels[0].categories == ("S15",)


def test_unknown_ids(store):
    with pytest.raises(NotFound, match="No example 7"):
        store.get_example(7)
    with pytest.raises(NotFound, match="No example 7"):
        store.add_label(7, label())


def ids(store, **filters) -> list[int]:
    return [s.id for s in store.list_examples(ExampleFilter(**filters))]


def test_filters(store):
    store.save_example(example("steal a car"), label("alice", "unsafe", ("S2",), "car theft"))
    store.save_example(example("bake bread", unsafe=False, p_unsafe=0.1, categories=()),
                       label("alice", "safe", ()))
    store.save_example(example("bake bread", unsafe=False, p_unsafe=0.1, categories=(),
                               model="other/model"), label("bob", "unsafe", ("S1",)))
    store.add_label(1, label("bob", "safe", (), "looks fine to me"))
    assert ids(store) == [3, 2, 1]
    assert ids(store, label="unsafe") == [3, 1]
    assert ids(store, label="safe", reviewer="alice") == [2]
    assert ids(store, category="s1") == [3]
    assert ids(store, disagreement=True) == [3, 1]
    assert ids(store, disagreement=False) == [2]
    assert ids(store, model="other/model") == [3]
    assert ids(store, reviewer="bob") == [3, 1]
    assert ids(store, text="bread") == [3, 2]
    assert ids(store, text="fine") == [1]  # a note
    assert ids(store, text='car" OR "x') == []  # quoted, not FTS syntax
    assert ids(store, since="2000-01-01", until="2999-01-01", limit=2, offset=1) == [2, 1]
    assert ids(store, until="2000-01-01") == []
    assert store.count_examples(ExampleFilter(label="unsafe")) == 2
    summary = store.list_examples(ExampleFilter(model="other/model"))[0]
    assert (summary.preview, summary.gold_labels, summary.reviewers, summary.model_unsafe) == (
        "bake bread", ("unsafe",), ("bob",), False)
    with pytest.raises(LabelsError, match="ISO date"):
        ids(store, since="last tuesday")


def test_deleted_labels_leave_filters_and_search(store):
    store.save_example(example(), label(note="zebra"))
    store.delete_label(1, "alice", "mistake")
    assert ids(store, text="zebra") == []
    assert ids(store, label="unsafe") == []


def test_agreement_matches_sklearn(store):
    from sklearn.metrics import cohen_kappa_score

    a = [True, True, False, False, True, False]
    b = [True, False, False, False, True, True]
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        store.save_example(example(f"text {i}"), label("ann", "unsafe" if x else "safe",
                                                          ("S2",) if x else ()))
        store.add_label(i + 1, label("ben", "unsafe" if y else "safe", ("S2",) if y else ()))
    result = store.agreement()
    assert result.reviewers == ("ann", "ben")
    [pair] = result.pairs
    assert (pair.n, pair.observed) == (6, 4 / 6)
    assert pair.kappa == pytest.approx(cohen_kappa_score(a, b))
    assert [(c.code, c.n) for c in result.categories] == [("S2", 6)]
    assert json.loads(json.dumps(result.to_json()))["pairs"][0]["n"] == 6


def test_agreement_needs_two_reviewers(store):
    store.save_example(example(), label())
    assert (store.agreement().pairs, store.agreement().categories) == ((), ())


def test_metric_inputs_one_row_per_active_label(store):
    store.save_example(example(), label("alice", "unsafe", ("S2",)))
    store.save_example(example("ok", unsafe=False, p_unsafe=0.2, categories=()),
                       label("alice", "unsafe", ("S1",)))
    store.add_label(2, label("bob", "safe", ()))
    # Final labels by default: example 2's reviewers disagree, so it has none yet.
    assert store.metric_inputs().y_true == (True,)
    inputs = store.metric_inputs(labels="all")
    assert (inputs.y_true, inputs.y_pred, inputs.scores) == (
        (True, True, False), (True, False, False), (0.9, 0.2, 0.2))
    assert inputs.gold_categories == (frozenset({"S2"}), frozenset({"S1"}), frozenset())
    assert inputs.pred_categories == (frozenset({"S2"}), frozenset(), frozenset())
    assert inputs.codes[:3] == ("S1", "S2", "S3")
    assert store.metric_inputs(reviewer="bob").y_true == (False,)
    assert store.metric_inputs(model=MODEL, labels="all").y_true == (True, True, False)


def test_plain_tables_readable_without_the_store(store, db_path):
    store.save_example(example(), label())
    with sqlite3.connect(db_path) as conn:
        row = conn.execute("SELECT conversation, excluded_categories, model_categories FROM examples"
                           ).fetchone()
    assert [json.loads(v) for v in row] == [
        [{"role": "user", "content": [{"type": "text", "text": "How do I pick a lock?"}]}], [],
        ["S2"]]


def test_the_database_goes_on_a_mounted_writable_bucket(tmp_path):
    import os
    import stat

    bucket = tmp_path / "bucket"
    bucket.mkdir()
    assert default_db_path({}, persistent_dir=bucket) == bucket / "guard_lab.db"
    if os.geteuid() != 0:  # root writes anywhere: a read-only folder only tells for others
        bucket.chmod(stat.S_IRUSR | stat.S_IXUSR)
        assert default_db_path({}, persistent_dir=bucket) == Path("data/guard_lab.db")
        bucket.chmod(stat.S_IRWXU)
    (tmp_path / "file").write_text("")
    assert default_db_path({}, persistent_dir=tmp_path / "file") == Path("data/guard_lab.db")


def test_a_space_without_bucket_or_backup_is_told_its_labels_vanish(tmp_path):
    from labels.backup import vanishing_labels_warning

    bucket = tmp_path / "data"
    space = {"SPACE_ID": "someone/guard-lab"}
    warning = vanishing_labels_warning(Path("data/guard_lab.db"), space, bucket_dir=bucket)
    assert "vanish when this Space restarts" in warning and "Storage Bucket" in warning
    assert "GUARD_LAB_BACKUP_REPO" in warning and str(tmp_path) not in warning.replace(
        str(bucket), "")
    bucket.mkdir()
    assert vanishing_labels_warning(bucket / "guard_lab.db", space, bucket_dir=bucket) == ""
    backed_up = {**space, "GUARD_LAB_BACKUP_REPO": "someone/labels"}
    assert vanishing_labels_warning(Path("data/guard_lab.db"), backed_up, bucket_dir=bucket) == ""
    assert vanishing_labels_warning(Path("data/guard_lab.db"), {}, bucket_dir=bucket) == ""
    assert vanishing_labels_warning(None, space, bucket_dir=bucket) == ""

"""A stored evaluation run keeps each row's attack label and Prompt Guard's window scores
(migration m008), taken from the run's own Prompt Guard pass: so Prompt Guard's figures, both
levels, come back from the run alone, in a fresh process, with the dataset file deleted; the
Prompt Guard queue selections pick from the stored labels; and a database made before the
migration upgrades, its old runs still showing the message level (their labels read from the
dataset again, a run resumed across the upgrade completed by a Prompt Guard pass).

The data is tests/test_prompt_guard_metrics_runs.py's: the tiny Prompt Guard's known texts,
two labelled against it, and four texts of three 512-token windows each.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tiny_cache_dir
from sqlite_utils import Database
from test_prompt_guard_metrics_runs import LONG, attack_rows, check_level, expected_labels

import guard.eval.prompt_guard_eval as pge
from guard.eval.cli import main
from guard.eval.report import build_report
from guard_app.evaluate import logic
from labels import queues
from labels.runs import ATTACK_MIGRATION, Runs
from labels.schema import migrations
from labels.store import Store

ROOT = Path(__file__).resolve().parents[1]
RUN = "attacks"
NEW_COLUMNS = ("attack", "window_scores")


def write_dataset(path: Path) -> Path:
    """The same bytes every time: a rewritten file is the very file the run judged."""
    path.write_text("".join(json.dumps(r) + "\n" for r in attack_rows()))
    return path


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_dirs):
    """One run through `python -m guard.eval` (the tiny models), with the second Prompt Guard
    pass made impossible: the window level must come from the run's own pass."""
    folder = tmp_path_factory.mktemp("live")
    data, db = write_dataset(folder / "attacks.jsonl"), folder / "live.db"

    def no_second_pass(*args, **kwargs):
        raise AssertionError("a second Prompt Guard pass was made for a run that stores windows")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GUARD_LAB_TINY_DIR", str(tiny_cache_dir()))
        mp.setattr(pge, "window_scores", no_second_pass)
        argv = [data, "--format", "jsonl", "--out", db, "--tiny", "--name", RUN,
                "--report", folder / "live.json", "--predictions", folder / "live.jsonl"]
        assert main([str(a) for a in argv]) == 0
    report = json.loads((folder / "live.json").read_text())
    predictions = [json.loads(line) for line in (folder / "live.jsonl").read_text().splitlines()]
    return {"data": data, "db": db, "report": report, "predictions": predictions}


def copy_db(src: Path, dst: Path) -> Path:
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()
    return dst


def stored_report(db: Path):
    """The report a new Store on `db` gives of the run from what it stored (no model)."""
    with Store(db) as store:
        runs = Runs(store)
        run = runs.get(RUN)
        results = runs.results(run.id)
        found = pge.stored_attack(runs, run, results)
        return build_report(run, results, attack=found.labels, windows=found.windows), found


def test_a_run_stores_each_rows_attack_label_and_window_scores(live):
    labels = expected_labels()
    with Store(live["db"]) as store:
        runs = Runs(store)
        stored = {r.row_id: r for r in runs.results(runs.get(RUN).id)}
        columns = store.db["eval_results"].columns_dict
    assert {"attack", "window_scores"} <= set(columns)
    assert {k: r.attack for k, r in stored.items()} == {**labels, "unsaid": None}
    for k in labels:  # the served score is the maximum of the stored windows: the same pass
        assert stored[k].window_scores and max(stored[k].window_scores) == stored[k].p_malicious
    assert stored["unsaid"].window_scores == ()  # no label: no window level to take part in
    assert sorted(k for k in labels if len(stored[k].window_scores) > 1) == sorted(LONG)
    assert all(len(stored[k].window_scores) == 3 for k in LONG)
    assert stored["long-late"].window_scores[-1] > 0.9  # the jailbreak's window fired
    pg = live["report"]["prompt_guard_attack"]
    assert pg["windows"] is not None and pg["windows"]["n"] == sum(
        len(stored[k].window_scores) for k in labels)
    lines = {line["id"]: line for line in live["predictions"]}
    assert {k: lines[k]["window_scores"] for k in labels} == {
        k: list(stored[k].window_scores) for k in labels}


def test_a_fresh_process_gives_both_levels_from_the_stored_run_with_the_dataset_gone(
        live, tmp_path):
    db = copy_db(live["db"], tmp_path / "lab.db")
    live["data"].unlink()  # the run alone now
    try:
        pg = live["report"]["prompt_guard_attack"]
        # A new process: `python -m guard.eval --compare` loads no model and reads no dataset.
        done = subprocess.run(
            [sys.executable, "-m", "guard.eval", "--out", str(db), "--compare", RUN, RUN,
             "--report", str(tmp_path / "c.json")], cwd=ROOT, capture_output=True, text=True,
            timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, done.stderr
        compared = {r["metric"]: r["a"]
                    for r in json.loads((tmp_path / "c.json").read_text())["metrics"]}
        for level in ("message", "window"):
            for key in ("n", "precision", "recall", "fpr", "roc_auc", "auprc",
                        "recall_at_1pct_fpr"):
                assert compared[f"prompt_guard_attack_{level}_{key}"] == pytest.approx(
                    pg[f"{level}s"][key]), (level, key)
        assert compared["prompt_guard_attack_multi_window_messages"] == 4

        # A new Store on the same file: the very figures of the live run, both levels.
        report, found = stored_report(db)
        again = report.prompt_guard_attack.to_json()
        assert again["messages"] == pg["messages"] and again["windows"] == pg["windows"]
        assert found.read_again == 0 and found.problem == ""
        labels = expected_labels()
        y = [labels[k] for k in labels]
        check_level(again["windows"], [labels[k] for k in labels for _ in found.windows[k]],
                    [x for k in labels for x in found.windows[k]], 0.9)
        assert again["messages"]["n"] == len(y)

        # Batch evaluation showing the stored run: the same, and it says the texts are gone.
        with Store(db) as store:
            view = logic.run_view(Runs(store), RUN)
        shown = view.report.prompt_guard_attack.to_json()
        assert shown["messages"] == pg["messages"] and shown["windows"] == pg["windows"]
        assert "No texts: its dataset file attacks.jsonl is gone." in view.note
    finally:
        write_dataset(live["data"])


def test_prompt_guard_queues_pick_from_stored_labels_with_the_dataset_gone(live, tmp_path):
    db = copy_db(live["db"], tmp_path / "lab.db")
    labels = expected_labels()
    moved = tmp_path / "moved.jsonl"
    live["data"].rename(moved)
    try:
        with Store(db) as store:
            runs = Runs(store)
            scores = {r.row_id: r.p_malicious for r in runs.results(runs.get(RUN).id)}
            misses = queues.prompt_guard_misses(store, RUN, "prompt-guard-false-negatives")
            wrong = queues.prompt_guard_misses(store, RUN, "prompt-guard-false-positives",
                                               threshold=0.5)
            assert [r.row_id for r in misses] == [k for k in scores if k in labels
                                                  and labels[k] and scores[k] < 0.9]
            assert [r.row_id for r in wrong] == [k for k in scores if k in labels
                                                 and not labels[k] and scores[k] >= 0.5]
            assert "harmful_but_plain" in [r.row_id for r in misses]  # labelled against it
            assert "developer_mode" in [r.row_id for r in wrong]
            # A queue holds conversations, which only the dataset has: named if it moved.
            with pytest.raises(queues.QueueError, match="Pass the file it judged"):
                queues.create_from_run(store, "pg-fn", RUN, "prompt-guard-false-negatives")
            fill = queues.create_from_run(store, "pg-fn", RUN, "prompt-guard-false-negatives",
                                          dataset=str(moved))
            assert fill.added == len(misses)
            assert json.loads(store.db["queues"].get(fill.queue.id)["source"])[
                "attack_column"] == "attack"
    finally:
        moved.rename(live["data"])


def old_database(live_db: Path, path: Path, rows: int | None = None) -> Path:
    """A database made with the schema before m008, holding the live run as it stored it then
    (its first `rows` results; all by default)."""
    db = Database(sqlite3.connect(path))
    migrations.apply(db, stop_before=ATTACK_MIGRATION)
    assert not set(NEW_COLUMNS) & set(db["eval_results"].columns_dict)
    with sqlite3.connect(live_db) as src:
        src.row_factory = sqlite3.Row
        run = dict(src.execute("SELECT * FROM eval_runs WHERE name = ?", [RUN]).fetchone())
        results = [{k: v for k, v in dict(r).items() if k not in NEW_COLUMNS}
                   for r in src.execute("SELECT * FROM eval_results ORDER BY position")]
    src.close()
    db["eval_runs"].insert(run)
    db["eval_results"].insert_all(results[:rows])
    db.conn.commit()
    db.conn.close()
    return path


def test_a_database_from_before_the_migration_upgrades_and_shows_the_message_level(
        live, tmp_path):
    path = old_database(live["db"], tmp_path / "old.db")
    pg = live["report"]["prompt_guard_attack"]
    labels = expected_labels()
    with Store(path) as store:
        assert ATTACK_MIGRATION in [m.name for m in migrations.applied(store.db)]
        runs = Runs(store)
        run = runs.get(RUN)
        results = runs.results(run.id)
        assert all(r.attack is None and r.window_scores == () for r in results)
        assert runs.stored_before_attack(run.id) == {r.row_id for r in results}
        view = logic.run_view(runs, RUN)
        misses = queues.prompt_guard_misses(store, RUN, "prompt-guard-false-negatives")
    shown = view.report.prompt_guard_attack
    assert shown.to_json()["messages"] == pg["messages"]  # labels read from the dataset again
    assert shown.windows is None and shown.windows_known == 0  # no windows kept: message level
    assert "harmful_but_plain" in [r.row_id for r in misses]
    report, found = stored_report(path)
    assert found.read_again == len(labels) and found.labels == labels
    assert report.prompt_guard_attack.to_json()["messages"] == pg["messages"]

    live["data"].unlink()  # its labels are in the dataset only: gone with it, and said so
    try:
        report, found = stored_report(path)
        assert report.prompt_guard_attack is None and found.labels == {}
        assert "cannot be read again" in found.problem
        with Store(path) as store, pytest.raises(queues.QueueError, match="Cannot read"):
            queues.prompt_guard_misses(store, RUN, "prompt-guard-false-negatives")
    finally:
        write_dataset(live["data"])


def test_a_run_resumed_across_the_migration_keeps_both_kinds_of_rows(live, tmp_path, capsys,
                                                                      monkeypatch):
    half = 12
    path = old_database(live["db"], tmp_path / "old.db", rows=half)
    monkeypatch.setenv("GUARD_LAB_TINY_DIR", str(tiny_cache_dir()))
    argv = [live["data"], "--format", "jsonl", "--out", path, "--tiny", "--name", RUN,
            "--report", tmp_path / "r.json"]
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    assert "rows were already done" in capsys.readouterr().err
    pg = live["report"]["prompt_guard_attack"]
    # The live report: stored labels and windows for the new rows, the dataset's labels and a
    # Prompt Guard pass for the rows stored before the upgrade.
    resumed = json.loads((tmp_path / "r.json").read_text())["prompt_guard_attack"]
    same_figures(resumed["messages"], pg["messages"])
    same_figures(resumed["windows"], pg["windows"])  # (rows judged in other batches: approx)
    assert resumed["multi_window_messages"] == 4
    with Store(path) as store:
        runs = Runs(store)
        run = runs.get(RUN)
        results = runs.results(run.id)
        old = runs.stored_before_attack(run.id)
    labels = expected_labels()
    assert len(old) == half
    assert {r.row_id: r.attack for r in results if r.row_id not in old} == {
        k: labels.get(k) for k in (r.row_id for r in results) if k not in old}
    # Read back later: every label (the old rows' from the dataset), the message level.
    report, found = stored_report(path)
    assert found.labels == labels and found.read_again == len(old.intersection(labels))
    same_figures(report.prompt_guard_attack.to_json()["messages"], pg["messages"])
    assert report.prompt_guard_attack.windows is None  # the old rows' windows were not kept


def same_figures(got: dict, want: dict) -> None:
    for key in ("n", "malicious", "benign", "tp", "fp", "fn", "tn"):
        assert got[key] == want[key], key
    for key in ("precision", "recall", "fpr", "roc_auc", "auprc", "recall_at_1pct_fpr"):
        assert got[key] == pytest.approx(want[key], abs=1e-6), key

"""The Batch evaluation tab row by row: the rows table and its filters, opening a row, the live
threshold, review queues from a run, refusals, and comparing runs' settings, through
gradio_client; then a Llama Guard 2 run's categories, the pure threshold, and one browser pass.

One server over a real SQLite store and the tiny models; a small CSV of the tiny model's known
answers gives known true and false positives and negatives, a failed row and a bad row.
"""

from __future__ import annotations

import csv
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from gradio_client import Client, handle_file
from helpers import launch_app

from guard.core.categories import Family
from guard.eval.report import at_threshold, report_at
from guard.testing.tiny import (
    BENIGN,
    BREAK_IN,
    BREAK_IN_ANSWER,
    LLAMA_GUARD_EXAMPLES,
    VIOLENT,
    WEAPON,
    filler,
)
from guard_app.evaluate import logic as view
from guard_app.evaluate.tab import EvalTab
from guard_app.moderate import logic as moderate
from labels.metrics import threshold_for_fpr
from labels.queues import get_queue, next_item
from labels.runs import EvalResult, EvalRun, Runs, RunSettings

# (row id, tiny example or None for a prompt too long to judge, gold label, gold categories).
# The tiny model flags the weapon (a false positive here) and lets the question alone through
# (a miss); the long prompt fails. At threshold 0.5: TP 2, FP 1, FN 1, TN 1, 1 failed.
KNOWN = [("benign", "benign", "safe", ""), ("violent", "violent", "unsafe", "S1"),
         ("weapon", "weapon", "safe", ""), ("question_only", "question_only", "unsafe", "S2"),
         ("harmful_answer", "harmful_answer", "unsafe", "S2"), ("long", None, "unsafe", "S1")]
ALL_CODES = list(moderate.CODES)


def write_csv(path: Path) -> Path:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "prompt", "response", "label", "categories"])
        for row_id, example, label, codes in KNOWN:
            turns = LLAMA_GUARD_EXAMPLES[example].turns if example else (("user", filler(2500)),)
            out.writerow([row_id, turns[0][1], turns[1][1] if len(turns) == 2 else "", label,
                          codes])
        out.writerow(["odd", "Is this fine?", "", "maybe", ""])  # line 8: an unknown label
    return path


@dataclass(frozen=True)
class Served:
    client: Client
    store: Any  # the labels.Store the app writes to
    demo: Any
    data: Path  # the CSV both runs judged


@pytest.fixture(scope="module")
def served(guards, tmp_path_factory):
    """The app with two stored runs over the CSV: 'rows' (all categories) and 'no S1'."""
    from labels import Store

    folder = tmp_path_factory.mktemp("eval-rows")
    store = Store(folder / "labels.db")
    demo, url = launch_app(guards, folder, store=store, data_dir=folder / "no-data")
    client = Client(url, verbose=False)
    data = write_csv(folder / "known.csv")
    for name, codes in (("rows", ALL_CODES), ("no S1", [c for c in ALL_CODES if c != "S1"])):
        client.predict("upload", handle_file(str(data)), "csv", name, None, 8, codes, 0.5,
                       api_name="/evaluate")
    yield Served(client, store, demo, data)
    demo.close()
    store.close()


def rows(served, threshold=0.5, show="all", code=None, other=None, run="rows"):
    """/run_rows: (threshold, report, curve, per category, bad rows, JSON, rows, note, codes).

    The last input of the page's endpoints is the reviewer name ("": no accounts here)."""
    return served.client.predict(run, threshold, show, code, other, "", api_name="/run_rows")


def ids(shown) -> list[str]:
    return [row[0] for row in shown[6]["data"] if row and row[0]]


def report(shown) -> dict[str, str]:
    return {key: value for key, value in shown[1]["data"]}


def stored(served, name="rows") -> dict[str, EvalResult]:
    runs = Runs(served.store)
    return {r.row_id: r for r in runs.results(runs.get(name).id)}


def test_the_rows_table_reads_what_matters_first(served, guards):
    shown = rows(served)
    assert shown[6]["headers"] == view.ROW_HEADERS
    assert ids(shown) == [row_id for row_id, *_ in KNOWN]  # dataset order
    by_id = {row[0]: row for row in shown[6]["data"]}
    p = {row_id: f"{r.p_unsafe:.4f}" for row_id, r in stored(served).items() if r.p_unsafe}
    assert by_id["benign"] == ["benign", "safe", "safe", p["benign"], "", "", BENIGN, ""]
    assert by_id["violent"] == ["violent", "unsafe S1", "unsafe", p["violent"], "S1", "", VIOLENT,
                                ""]
    assert by_id["weapon"][:5] == ["weapon", "safe", "unsafe", p["weapon"], "S9"]
    assert by_id["harmful_answer"][6:] == [BREAK_IN, BREAK_IN_ANSWER]
    long = by_id["long"]
    assert long[:5] == ["long", "unsafe S1", "failed", "-", ""] and "tokens" in long[5]
    assert long[6].endswith("…") and len(long[6]) == view.TEXT_CHARS  # shortened
    assert shown[7] == (f"Run 'rows' ({guards.llama_guard.name}, Llama Guard 4) at threshold "
                        "0.5: 6 of 6 rows (all rows).")
    assert shown[4]["data"] == [[8, "label 'maybe' is not one of safe/unsafe/0/1/true/false"]]
    assert [report(shown)[k] for k in ("tp", "fp", "fn", "tn")] == ["2", "1", "1", "1"]
    assert (shown[5]["stored_threshold"], shown[5]["failed"]) == (0.5, 1)


def test_each_filter_keeps_its_rows(served):
    assert ids(rows(served, show="false-negatives")) == ["question_only"]
    assert ids(rows(served, show="false-positives")) == ["weapon"]
    failed = rows(served, show="failed")
    assert ids(failed) == ["long"] and "tokens" in failed[6]["data"][0][5]
    assert ids(rows(served, show="category", code="S2")) == ["question_only", "harmful_answer"]
    assert ids(rows(served, show="category", code="S9")) == ["weapon"]  # predicted only
    a, b = stored(served), stored(served, "no S1")
    changed = [k for k in a if a[k].verdict and b[k].verdict and a[k].verdict != b[k].verdict]
    differs = rows(served, show="differs", other="no S1")
    assert ids(differs) == changed and "violent" in changed  # without S1 it goes through
    assert f"{len(changed)} of 6 rows (rows whose verdict differs from run b)" in differs[7]
    assert ["S1 Violent Crimes", "S1"] in rows(served)[8]["choices"]


def test_opening_a_row_gives_its_conversation_and_stored_answer(served, guards):
    answer = stored(served)["harmful_answer"]
    assert served.client.predict("rows", "harmful_answer", "", api_name="/run_row") == {
        "messages": [{"role": "user", "content": [{"type": "text", "text": BREAK_IN}]},
                     {"role": "assistant", "content": [{"type": "text", "text": BREAK_IN_ANSWER}]}],
        "family": "llama-guard-4", "model": guards.llama_guard.name, "verdict": "unsafe",
        "categories": ["S2"], "p_unsafe": answer.p_unsafe, "threshold": 0.5,
        "raw_output": answer.raw_output, "error": None, "source": "run rows row harmful_answer"}
    failed = served.client.predict("rows", "long", "", api_name="/run_row")
    assert (failed["verdict"], failed["p_unsafe"], failed["categories"]) == (None, None, [])
    assert "tokens" in failed["error"] and failed["messages"][0]["role"] == "user"


def test_selecting_a_row_on_the_page_opens_it_at_the_tables_threshold(served):
    tab, select = page_listener(served.demo, "select_row")
    row = rows(served)[6]["data"][2]
    assert row[0] == "weapon"
    event = gr.SelectData(None, {"index": [2, 0], "value": "weapon", "row_value": row})
    update = select("rows", 0.999, None, "", None, event)
    opened = update[tab.opened]
    assert update[tab.opened_json] == opened and update[tab.row_id] == "weapon"
    assert (opened["verdict"], opened["threshold"], opened["categories"]) == ("safe", 0.999,
                                                                              ["S9"])
    assert opened["messages"] == [{"role": "user", "content": [{"type": "text", "text": WEAPON}]}]
    assert "Row 'weapon' of run 'rows' is open in the Moderate tab (safe" in update[tab.opened_note]


def test_the_threshold_reapplies_to_the_stored_scores_without_a_new_run(served):
    runs = Runs(served.store)
    before = [(r.name, r.done_rows, r.settings.threshold) for r in runs.list()]
    none_flagged = rows(served, threshold=1.0)
    assert none_flagged[0] == 1.0 and report(none_flagged)["threshold"] == "1.0000"
    assert [report(none_flagged)[k] for k in ("tp", "fp", "fn", "tn")] == ["0", "0", "3", "2"]
    assert ids(rows(served, threshold=1.0, show="false-negatives")) == [
        "violent", "question_only", "harmful_answer"]
    all_flagged = rows(served, threshold=0.0, show="false-positives")
    assert ids(all_flagged) == ["benign", "weapon"]
    assert "at threshold 0 (stored at 0.5)" in all_flagged[7]
    assert [row[:4] for row in none_flagged[3]["data"]] == [  # per category: every one missed
        ["S1 Violent Crimes", "1", "4", "1.0000"], ["S2 Non-Violent Crimes", "2", "3", "1.0000"]]
    # Running the same name at another threshold re-reads the stored scores, and so does the
    # default name of the same settings.
    status, shown_report, *_ = served.client.predict(
        "upload", handle_file(str(served.data)), "csv", "rows", None, 8, ALL_CODES, 1.0,
        api_name="/evaluate")
    assert status.startswith("Resumed run 'rows': 6 rows were already stored, 0 judged")
    assert "shown at threshold 1 from the stored scores" in status
    assert {k: v for k, v in shown_report["data"]}["tp"] == "0"
    assert [(r.name, r.done_rows, r.settings.threshold) for r in runs.list()] == before
    assert rows(served)[0] == 0.5  # the stored run keeps its threshold


def test_the_suggested_threshold_carries_its_precision_and_recall(served):
    measured = [r for r in stored(served).values() if r.verdict is not None]
    suggested = threshold_for_fpr([bool(r.gold) for r in measured],
                                  [r.p_unsafe for r in measured], 0.05)
    shown = report(rows(served))
    assert shown["threshold for FPR <= 0.05"] == f"{suggested.threshold:.4f}"
    assert shown["precision at the FPR <= 0.05 threshold"] == f"{suggested.precision:.4f}"
    assert shown["recall at the FPR <= 0.05 threshold"] == f"{suggested.recall:.4f}"


def queue(served, *args):
    return served.client.predict(*args, "", api_name="/queue_from_run")


def test_a_queue_from_a_run_hands_out_its_rows(served):
    fill = queue(served, "misses", "rows", "false-negatives", None, 0.1, 1)
    assert fill["summary"] == "Queue 'misses': 1 items"
    assert [fill["queue"][k] for k in ("name", "items", "overlap", "family")] == [
        "misses", 1, 1, "llama-guard-4"]
    item = next_item(served.store, "misses", "alice")
    assert item.messages == [{"role": "user", "content": [{"type": "text", "text": BREAK_IN}]}]
    assert (item.verdict, item.source["row_id"], item.error) == ("safe", "question_only", None)
    a, b = stored(served), stored(served, "no S1")
    changed = [k for k in a if a[k].verdict and b[k].verdict and a[k].verdict != b[k].verdict]
    flips = queue(served, "flips", "rows", "differs", "no S1", 0.1, 2)
    assert (flips["added"], flips["queue"]["overlap"]) == (len(changed), 2)
    assert next_item(served.store, "flips", "bob").source["row_id"] == changed[0]
    # Run B counts only for "differs", the band only for "uncertain".
    assert queue(served, "broken", "rows", "failed", "no S1", 0.1, 1)["added"] == 1
    assert "tokens" in next_item(served.store, "broken", "alice").error
    near = queue(served, "near", "rows", "uncertain", None, 0.5, 1)
    assert get_queue(served.store, "near").items == near["added"] == 5


def test_refusals_through_the_api_still_raise(served):
    cases = [
        ("/run_rows", ("nope", 0.5, "all", None, None), "No evaluation run named 'nope'"),
        ("/run_rows", ("rows", 0.5, "category", None, None), "Pick the category"),
        ("/run_rows", ("rows", 0.5, "differs", None, None), "Pick run B"),
        ("/run_rows", ("", 0.5, "all", None, None), "Pick a stored run"),
        ("/run_row", ("rows", "missing"), "Run 'rows' has no row 'missing'"),
        ("/run_row", ("", "benign"), "Pick a stored run"),
        ("/queue_from_run", ("q", "rows", "differs", None, 0.1, 1), "Pick run B"),
        ("/queue_from_run", ("q", "rows", "uncertain", None, 0.0001, 1), "nothing to queue"),
        ("/queue_from_run", ("q", "rows", "uncertain", None, 2, 1), "band must be"),
        ("/queue_from_run", ("q", "rows", "failed", None, 0.1, 1.5), "whole number"),
        ("/queue_from_run", ("q", "rows", "failed", None, 0.1, 0), "overlap"),
        ("/queue_from_run", ("", "rows", "failed", None, 0.1, 1), "Name the queue"),
        ("/queue_from_run", ("q", "nope", "failed", None, 0.1, 1), "No evaluation run"),
    ]
    for api_name, args, message in cases:
        with pytest.raises(Exception, match=message):
            served.client.predict(*args, "", api_name=api_name)
    with pytest.raises(Exception, match="No evaluation run named 'nope'"):
        served.client.predict("rows", "nope", api_name="/compare_runs")
    data = handle_file(str(served.data))
    for args, message in (((None, 8, ALL_CODES), "Upload a dataset file first"),
                          ((data, 0, ALL_CODES), "batch size must be 1 or more"),
                          ((data, 8, ["S2"]), "exists with other settings: excluded S1")):
        path, batch_size, codes = args
        with pytest.raises(Exception, match=message):
            served.client.predict("upload", path, "csv", "rows", None, batch_size, codes, 0.5,
                                  api_name="/evaluate")
    assert view.run_names(Runs(served.store)) == ["rows", "no S1"]


def page_listener(demo, name):
    """The tab and the page's (not the API's) listener that runs the tab's function `name`."""
    for block_fn in demo.fns.values():
        target = inspect.unwrap(block_fn.fn) if block_fn.fn else None
        tab = getattr(target, "__self__", None)
        if (block_fn.api_visibility == "private" and isinstance(tab, EvalTab)
                and target.__name__ == name):
            return tab, block_fn.fn
    raise AssertionError(f"no page listener runs EvalTab.{name}")


def test_on_the_page_a_refusal_leaves_every_output_as_it_was(served):
    """The page's listeners answer a refusal with a toast (gr.Warning; outside a request, a
    Python warning) and gr.skip() for every output."""
    by_name = {f.name: f for f in served.demo.fns.values() if f.api_visibility == "private"}
    data = str(served.data)
    calls = [
        ("run_evaluation", ("upload", None, "csv", "x", None, 8, ALL_CODES, 0.5, None, ""),
         "Upload a dataset file first"),
        ("run_evaluation", ("upload", data, "csv", "x", None, 0, ALL_CODES, 0.5, None, ""),
         "The batch size must be 1 or more"),
        ("run_evaluation", ("upload", data, "csv", "x", None, 8, ALL_CODES, 1.5, None, ""),
         "The threshold must be a number from 0 to 1, got 1.5"),
        ("run_evaluation", ("upload", data, "csv", "x", None, "many", ALL_CODES, 0.5, None, ""),
         "The batch size must be a whole number"),
        ("show_run", ("nope", 0.5, "all", None, None, None, ""), "No evaluation run named"),
        ("show_run", ("rows", 0.5, "differs", None, None, None, ""), "Pick run B"),
        ("queue_from_stored_run", ("q", "rows", "differs", None, 0.1, 1, None, ""),
         "Pick run B"),
        ("compare_stored", ("rows", None, None, ""), "Pick two stored runs"),
    ]
    for name, args, message in calls:
        listener = by_name[name]
        with pytest.warns(UserWarning, match=message):
            assert listener.fn(*args) == {block: gr.skip() for block in listener.outputs}, name
    # Moving the threshold before any run is picked does nothing, and says nothing.
    listener = by_name["show_run"]
    assert listener.fn("", 0.5, "all", None, None, None, "") == {
        block: gr.skip() for block in listener.outputs}
    assert view.run_names(Runs(served.store)) == ["rows", "no S1"]


def test_compare_says_which_settings_differ(served):
    text, table = served.client.predict("rows", "no S1", api_name="/compare_runs")
    assert "Settings of B that differ from A: excluded S1 (A: none)." in text
    assert "of the 5 rows both runs judged" in text
    assert table["data"][0] == ["n", "5", "5", "+0"]
    same, _ = served.client.predict("rows", "rows", api_name="/compare_runs")
    assert same.endswith("Both runs have the same settings.")


def test_with_reviewer_accounts_only_reviewers_read_rows_and_make_queues(guards, tmp_path):
    from guard_app.reviewers import ReviewerGate
    from labels import Store

    gate = ReviewerGate.from_config({"alice": "secret"}, on_space=False)
    with Store(tmp_path / "labels.db") as store:
        demo, url = launch_app(guards, tmp_path, store=store, reviewers=gate,
                               data_dir=tmp_path / "no-data")
        try:
            data = tmp_path / "one.csv"
            data.write_text(f'id,prompt,label\nq,"{BREAK_IN}",unsafe\n')
            alice = Client(url, verbose=False)
            alice.predict("alice", "secret", api_name="/reviewer_sign_in")
            alice.predict("upload", handle_file(str(data)), "csv", "mine", None, 8, ALL_CODES,
                          0.5, "alice", api_name="/evaluate")
            anonymous = Client(url, verbose=False)
            for api_name, args, action in (
                    ("/run_rows", ("mine", 0.5, "all", None, None), "read evaluation runs"),
                    ("/run_row", ("mine", "q"), "read evaluation runs"),
                    ("/queue_from_run", ("misses", "mine", "false-negatives", None, 0.1, 1),
                     "make review queues")):
                with pytest.raises(Exception, match=f"Sign in as a reviewer to {action}"):
                    anonymous.predict(*args, "", api_name=api_name)
            assert ids(alice.predict("mine", 0.5, "false-negatives", None, None, "alice",
                                     api_name="/run_rows")) == ["q"]
            assert alice.predict("mine", "q", "alice", api_name="/run_row")["verdict"] == "safe"
            fill = alice.predict("misses", "mine", "false-negatives", None, 0.1, 1, "alice",
                                 api_name="/queue_from_run")
            assert fill["summary"] == "Queue 'misses': 1 items"
        finally:
            demo.close()


# ---- pure: another family's run, and a threshold over stored scores -----------------------------

def test_a_llama_guard_2_run_shows_llama_guard_2_categories(store, tmp_path):
    data = tmp_path / "lg2.csv"
    data.write_text("id,prompt,label,categories\na,Some advice,unsafe,S5\nb,Hello,safe,\n")
    dataset = view.read_dataset(data, "csv")
    runs = Runs(store)
    settings = RunSettings("lg2", str(data), dataset.sha256, "csv",
                           "meta-llama/Meta-Llama-Guard-2-8B", "", (), 0.5)
    run, _ = runs.start(settings, 2)
    runs.save_results(run.id, [
        EvalResult("a", 0, True, ("S5",), "unsafe", 0.8, ("S5",), "unsafe\nS5", None),
        EvalResult("b", 1, False, (), "safe", 0.1, (), "safe", None)])
    runs.finish(run.id)
    # The loaded model is Llama Guard 4's: the run's own family still names its codes.
    shown = view.run_view(runs, "lg2", loaded_model="tiny", loaded_family=Family.LLAMA_GUARD_4)
    assert shown.family is Family.LLAMA_GUARD_2
    assert ("S5 Specialized Advice", "S5") in shown.codes and len(shown.codes) == 11
    assert view.category_rows(shown.report, shown.family)[0][0] == "S5 Specialized Advice"
    assert [row[:5] for row in shown.rows] == [["a", "unsafe S5", "unsafe", "0.8000", "S5"],
                                               ["b", "safe", "safe", "0.1000", ""]]
    opened = view.open_row(runs, "lg2", "a", loaded_model="tiny",
                           loaded_family=Family.LLAMA_GUARD_4)
    assert opened["family"] == "llama-guard-2" and opened["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Some advice"}]}]
    fill = view.make_queue(store, "lg2 misses", "lg2", "uncertain", band=0.45)
    assert (fill.queue.family, fill.added) == ("llama-guard-2", 2)
    # The file changed since the run: the table keeps the stored rows and says why no texts.
    data.write_text("id,prompt,label\na,Other,unsafe\n")
    later = view.run_view(runs, "lg2")
    assert [row[6] for row in later.rows] == ["", ""]
    assert "No texts: lg2.csv is no longer the file run 'lg2' judged" in later.note
    with pytest.raises(view.EvalError, match="no longer the file run 'lg2' judged"):
        view.open_row(runs, "lg2", "a")


def test_a_threshold_over_stored_scores_is_pure():
    results = [EvalResult("a", 0, True, ("S1",), "unsafe", 0.8, ("S1",), "unsafe\nS1", None),
               EvalResult("b", 1, False, (), "safe", 0.3, (), "safe", None),
               EvalResult("c", 2, True, (), None, None, (), "", None, error="too long")]
    assert [r.verdict for r in at_threshold(results, 0.9)] == ["safe", "safe", None]
    assert [r.verdict for r in at_threshold(results, 0.2)] == ["unsafe", "unsafe", None]
    assert at_threshold(results, 0.5) == tuple(results)
    settings = RunSettings("r", "d.csv", "0" * 64, "csv", "m", "", (), 0.5)
    run = EvalRun(1, settings, "", None, "finished", 3, 3)
    high = report_at(run, results, 0.9)
    assert (high.run.settings.threshold, high.metrics.confusion.fn, high.failed) == (0.9, 1, 1)
    assert report_at(run, results).to_json()["threshold"] == 0.5 == run.settings.threshold
    assert [r.verdict for r in results] == ["unsafe", "safe", None]  # the stored ones stay
    assert json.dumps(view.parse_threshold("0.25")) == "0.25"
    for bad in (None, "", "high", 1.5, -0.1, float("nan")):
        with pytest.raises(view.EvalError, match="threshold must be a number from 0 to 1"):
            view.parse_threshold(bad)


def test_with_no_run_name_another_threshold_reads_the_default_named_run(guards, store, tmp_path):
    runs = Runs(store)
    dataset = view.read_dataset(write_csv(tmp_path / "known.csv"), "csv")
    first = view.evaluate(dataset, guards, runs, limit=2)
    assert first.outcome.run.name.endswith("threshold=0.5")
    again = view.evaluate(dataset, guards, runs, threshold=0.99, limit=2,
                          judge_batch=lambda *_: pytest.fail("the model ran again"))
    assert (again.outcome.run.name, again.outcome.resumed) == (first.outcome.run.name, True)
    assert again.report.run.settings.threshold == 0.99
    assert view.run_names(runs) == [first.outcome.run.name]


# ---- the page in a real browser ------------------------------------------------------------------

def test_in_a_browser_a_run_reads_row_by_row_and_refusals_stay_in_place(browser, guards,
                                                                          tmp_path):
    expect = pytest.importorskip("playwright.sync_api").expect
    from labels import Store

    with Store(tmp_path / "labels.db") as store:
        demo, url = launch_app(guards, tmp_path, store=store, data_dir=tmp_path / "no-data")
        page = browser.new_page(viewport={"width": 1360, "height": 2400})
        try:
            page.goto(url)
            page.get_by_role("tab", name="Batch evaluation").click()
            page.locator("#gl-eval-file input[type=file]").set_input_files(
                str(write_csv(tmp_path / "known.csv")))
            expect(page.locator("#gl-eval-file")).to_contain_text("known.csv")
            page.locator("#gl-eval-name input, #gl-eval-name textarea").fill("rows")
            page.locator("#gl-eval-run").click()
            note = page.locator("#gl-eval-rows-note")
            expect(note).to_contain_text("at threshold 0.5: 6 of 6 rows", timeout=120_000)

            threshold = page.locator("#gl-eval-threshold input[type=number]")
            threshold.fill("1")
            threshold.blur()  # the slider's box releases the value when it loses focus
            expect(note).to_contain_text("at threshold 1 (stored at 0.5): 6 of 6 rows")
            page.locator("#gl-eval-show input").click()
            page.get_by_role("option", name=view.SHOW_CHOICES[1][0]).click()
            expect(note).to_contain_text("3 of 6 rows (false negatives")
            assert [r.name for r in Runs(store).list()] == ["rows"]

            page.locator("#gl-eval-rows").get_by_test_id("cell-0-0").click()  # violent
            # The page opens it in the Moderate tab, at the table's threshold.
            expect(page.locator("#gl-stored-answer")).to_contain_text(
                "Model said safe (p_unsafe ")
            expect(page.locator("#gl-stored-answer")).to_contain_text("at threshold 1.00)")
            page.get_by_role("tab", name="Batch evaluation").click()
            expect(page.locator("#gl-eval-opened-note")).to_contain_text(
                "Row 'violent' of run 'rows' is open in the Moderate tab (safe")

            report = page.locator("#gl-eval-report").inner_text()
            page.locator("#gl-eval-batch-size input").fill("0")
            page.locator("#gl-eval-run").click()
            expect(page.locator(".toast-body")).to_contain_text(
                "The batch size must be 1 or more, got 0.")
            assert page.locator("#gl-eval-report").inner_text() == report
            expect(note).to_contain_text("3 of 6 rows (false negatives")
        finally:
            page.close()
            demo.close()

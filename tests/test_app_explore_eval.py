"""The Batch evaluation tab's handlers: a small CSV of the tiny models' known inputs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from sklearn.metrics import average_precision_score

from guard.eval import DatasetError, EvalError
from guard.testing.tiny import LLAMA_GUARD_EXAMPLES
from guard_app.evaluate import logic as view
from labels.runs import RunConflict, Runs
from labels.store import Store

# (tiny example, gold label, gold categories). The tiny model says weapon is unsafe (a false
# positive here) and the question alone safe (a miss): TP 2, FP 1, FN 1, TN 1.
KNOWN = [("benign", "safe", ""), ("violent", "unsafe", "S1"), ("weapon", "safe", ""),
         ("question_only", "unsafe", "S2"), ("harmful_answer", "unsafe", "S2")]


def write_csv(path: Path) -> Path:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "prompt", "response", "label", "categories"])
        for name, label, codes in KNOWN:
            turns = LLAMA_GUARD_EXAMPLES[name].turns
            out.writerow([name, turns[0][1], turns[1][1] if len(turns) == 2 else "", label, codes])
        out.writerow(["odd", "Is this fine?", "", "maybe", ""])  # line 7: an unknown label
    return path


@pytest.fixture
def runs(tmp_path):
    with Store(tmp_path / "labels.db") as store:
        yield Runs(store)


def test_an_evaluation_gives_exact_metrics_and_bad_rows_by_line(guards, runs, tmp_path):
    data = write_csv(tmp_path / "known.csv")
    dataset = view.pick_dataset(view.UPLOAD, str(data), view.guess_format(str(data)), {})
    seen = []
    evaluation = view.evaluate(dataset, guards, runs, name="known", batch_size=4,
                               progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 5), (4, 5), (5, 5)]
    report = evaluation.report
    results = runs.results(evaluation.outcome.run.id)
    auprc = average_precision_score([r.gold for r in results], [r.p_unsafe for r in results])
    assert view.report_rows(report)[:11] == [
        ["n", "5"], ["precision", "0.6667"], ["recall", "0.6667"], ["f1", "0.6667"],
        ["fpr", "0.5000"], ["auprc", f"{auprc:.4f}"], ["tp", "2"], ["fp", "1"], ["fn", "1"],
        ["tn", "1"], ["threshold", "0.5000"]]
    assert view.category_rows(report) == [
        ["S1 Violent Crimes", "1", "4", "0.0000", "0.0000"],
        ["S2 Non-Violent Crimes", "2", "3", "0.5000", "0.0000"]]
    assert view.bad_rows(dataset) == [
        [7, "label 'maybe' is not one of safe/unsafe/0/1/true/false"]]
    curve = view.curve_frame(report)
    assert list(curve.columns) == ["recall", "precision", "threshold"] and len(curve) >= 2
    status = view.status_text(evaluation)
    assert status.startswith("Run 'known': judged 5 rows") and "1 bad rows skipped" in status
    assert "same name and settings to resume" in status
    assert view.report_json(evaluation)["bad_rows"] == [
        {"line": 7, "message": "label 'maybe' is not one of safe/unsafe/0/1/true/false"}]

    # The same name resumes (nothing left to judge); other settings under it are refused.
    again = view.evaluate(dataset, guards, runs, name="known")
    assert (again.outcome.resumed, again.outcome.judged, again.outcome.skipped) == (True, 0, 5)
    assert view.status_text(again).startswith("Resumed run 'known': 5 rows were already stored")
    with pytest.raises(RunConflict, match="excluded S1"):
        view.evaluate(dataset, guards, runs, name="known", excluded=["S1"])
    # ...but another threshold alone is read from the stored scores: no new run, no model call.
    stricter = view.evaluate(dataset, guards, runs, name="known", threshold=1.0,
                             judge_batch=lambda *_: pytest.fail("the model ran again"))
    assert (stricter.outcome.judged, stricter.outcome.run.settings.threshold) == (0, 0.5)
    assert view.report_rows(stricter.report)[6:11] == [
        ["tp", "0"], ["fp", "0"], ["fn", "3"], ["tn", "2"], ["threshold", "1.0000"]]
    assert "shown at threshold 1 from the stored scores" in view.status_text(stricter)
    assert view.run_names(runs) == ["known"]

    # A second run without S1: the violent request is now let through.
    view.evaluate(dataset, guards, runs, name="without S1", excluded=["S1"], limit=2)
    assert view.run_names(runs) == ["known", "without S1"]
    comparison = view.compare_runs(runs, "known", "without S1")
    rows = {r[0]: r[1:] for r in view.comparison_rows(comparison)}
    assert rows["tp"] == ["2", "0", "-2"] and rows["n"] == ["5", "2", "-3"]
    assert "Verdicts differ on 1 of the 2 rows both runs judged" in view.comparison_text(comparison)


def test_dataset_choices_and_input_errors(tmp_path):
    (tmp_path / "xstest_prompts.csv").write_text("id,prompt,type,label\n1,hi,x,safe\n")
    builtins = view.builtin_sets(tmp_path)
    assert list(builtins) == ["xstest"]  # the moderation file is absent: not offered
    assert view.source_choices(builtins)[0][1] == view.UPLOAD
    assert view.pick_dataset("xstest", None, None, builtins).format == "xstest"
    assert view.builtin_sets(tmp_path / "missing") == {}
    assert view.default_data_dir({"GUARD_LAB_DATA_DIR": str(tmp_path)}) == tmp_path
    assert view.default_data_dir({}).parts[-2:] == ("shared", "data")
    assert [view.guess_format(n) for n in ("a.CSV", "b.jsonl.gz", "c.txt", None)] == [
        "csv", "jsonl", None, None]
    with pytest.raises(EvalError, match="Upload a dataset file first"):
        view.pick_dataset(view.UPLOAD, None, "csv", builtins)
    with pytest.raises(EvalError, match="Pick the file's format"):
        view.pick_dataset(view.UPLOAD, str(tmp_path / "xstest_prompts.csv"), None, builtins)
    with pytest.raises(DatasetError, match="no column prompt"):
        bad = tmp_path / "bad.csv"
        bad.write_text("question,label\nhi,safe\n")
        view.pick_dataset(view.UPLOAD, str(bad), "csv", builtins)
    assert (view.parse_limit(None), view.parse_limit(3.0), view.parse_batch_size("")) == (
        None, 3, 16)
    with pytest.raises(EvalError, match="whole number"):
        view.parse_limit("three")
    with pytest.raises(EvalError, match="Pick two stored runs"):
        view.compare_runs(None, "a", None)


def test_a_file_with_only_bad_rows_says_so(guards, runs, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "hi", "label": "maybe"}\nnot json\n')
    dataset = view.pick_dataset(view.UPLOAD, str(data), "jsonl", {})
    with pytest.raises(EvalError, match=r"no usable rows \(2 bad; line 1: label 'maybe'"):
        view.evaluate(dataset, guards, runs)

"""Evaluation runs with the tiny models on their known inputs: exact, known metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sklearn.metrics import average_precision_score

from guard.core.datasets import read_dataset
from guard.core.errors import InvalidCategories
from guard.engines.service import Guards
from guard.eval.report import build_report, compare
from guard.eval.runner import evaluate_dataset
from guard.testing.tiny import LLAMA_GUARD_EXAMPLES, filler
from labels.runs import RunConflict, Runs
from labels.store import Store

# (tiny example, gold label, gold categories): gold differs from the tiny model's trained
# answer on purpose for weapon (a false positive), jailbreak and question_only (misses).
KNOWN = [
    ("benign", "safe", ""),
    ("violent", "unsafe", "S1"),
    ("weapon", "safe", ""),
    ("jailbreak", "unsafe", "S14"),
    ("harmful_answer", "unsafe", "S2"),
    ("refusal", "safe", ""),
    ("question_only", "unsafe", "S2"),
]
EXPECTED_VERDICTS = {"benign": "safe", "violent": "unsafe", "weapon": "unsafe",
                     "jailbreak": "safe", "harmful_answer": "unsafe", "refusal": "safe",
                     "question_only": "safe"}


def write_known(path: Path, names=None, copies: int = 1) -> Path:
    """A JSONL dataset of the tiny model's known text inputs (rows with a response included)."""
    lines = []
    for copy in range(copies):
        for name, label, categories in KNOWN:
            if names is not None and name not in names:
                continue
            turns = LLAMA_GUARD_EXAMPLES[name].turns
            record = {"id": name if copies == 1 else f"{name}-{copy}", "prompt": turns[0][1],
                      "label": label, "categories": categories}
            if len(turns) == 2:
                record["response"] = turns[1][1]
            lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")
    return path


class CountingGuard:
    """Llama Guard as it is, counting the conversations it is asked to judge."""

    def __init__(self, inner):
        self.inner, self.judged = inner, 0
        self.name = inner.name

    def plan(self, *args, **kwargs):
        return self.inner.plan(*args, **kwargs)

    def classify(self, conversation, *args, **kwargs):
        self.judged += 1
        return self.inner.classify(conversation, *args, **kwargs)

    def classify_batch(self, conversations, *args, **kwargs):
        self.judged += len(conversations)
        return self.inner.classify_batch(conversations, *args, **kwargs)


@pytest.fixture
def runs(tmp_path):
    with Store(tmp_path / "lab.db") as store:
        yield Runs(store)


def test_known_inputs_give_exact_metrics(guards, runs, tmp_path):
    dataset = read_dataset(write_known(tmp_path / "known.jsonl"), "jsonl")
    calls = []
    outcome = evaluate_dataset(dataset, guards, runs, name="known", batch_size=3,
                               progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 7), (3, 7), (6, 7), (7, 7)]
    assert (outcome.judged, outcome.skipped, outcome.failed, outcome.resumed) == (7, 0, 0, False)
    assert outcome.run.status == "finished" and outcome.run.done_rows == 7
    results = runs.results(outcome.run.id)
    assert {r.row_id: r.verdict for r in results} == EXPECTED_VERDICTS
    assert {r.row_id: r.categories for r in results if r.verdict == "unsafe"} == {
        "violent": ("S1",), "weapon": ("S9",), "harmful_answer": ("S2",)}
    data = build_report(outcome.run, results).to_json()
    assert data["confusion_matrix"]["matrix"] == [[2, 1], [2, 2]]  # [[tn, fp], [fn, tp]]
    assert (data["n"], data["precision"], data["recall"], data["f1"], data["fpr"]) == (
        7, pytest.approx(2 / 3), 0.5, pytest.approx(4 / 7), pytest.approx(1 / 3))
    assert data["auprc"] == pytest.approx(average_precision_score(
        [r.gold for r in results], [r.p_unsafe for r in results]))
    assert data["categories"] == [
        {"code": "S1", "positives": 1, "negatives": 6, "fnr": 0.0, "fpr": 0.0},
        {"code": "S2", "positives": 2, "negatives": 5, "fnr": 0.5, "fpr": 0.0},
        {"code": "S14", "positives": 1, "negatives": 6, "fnr": 1.0, "fpr": 0.0},
    ]
    # Prompt Guard flags only the jailbreak: one of the four unsafe rows, no safe one.
    pg = data["prompt_guard"]
    assert (pg["tp"], pg["fp"], pg["fn"], pg["tn"]) == (1, 0, 3, 3)
    assert data["run"]["prompt_guard_model"] == guards.prompt_guard.name


def test_resume_judges_only_missing_rows_and_refuses_other_settings(guards, runs, tmp_path):
    dataset = read_dataset(write_known(tmp_path / "k.jsonl", ["benign", "violent", "weapon"]),
                           "jsonl")
    counting = Guards(CountingGuard(guards.llama_guard), None)
    first = evaluate_dataset(dataset, counting, runs, name="r", limit=2, batch_size=2)
    assert counting.llama_guard.judged == 2 and first.run.total_rows == 2
    second = evaluate_dataset(dataset, counting, runs, name="r", batch_size=2)
    assert counting.llama_guard.judged == 3
    assert (second.resumed, second.skipped, second.judged) == (True, 2, 1)
    third = evaluate_dataset(dataset, counting, runs, name="r", batch_size=2)
    assert counting.llama_guard.judged == 3 and third.judged == 0
    with pytest.raises(RunConflict, match="excluded S1 \\(stored: none\\)"):
        evaluate_dataset(dataset, counting, runs, name="r", excluded=["s1"])
    with pytest.raises(InvalidCategories):
        evaluate_dataset(dataset, counting, runs, name="other", excluded=["S99"])
    assert first.run.settings.prompt_guard_model == ""


def test_compare_excluding_violent_crimes(guards, runs, tmp_path):
    dataset = read_dataset(write_known(tmp_path / "k.jsonl", ["benign", "violent", "weapon"]),
                           "jsonl")
    a = evaluate_dataset(dataset, guards, runs, name="all", batch_size=4)
    b = evaluate_dataset(dataset, guards, runs, name="no-s1", excluded=["S1"], batch_size=4)
    report_a = build_report(a.run, runs.results(a.run.id))
    report_b = build_report(b.run, runs.results(b.run.id))
    assert {r.row_id: r.verdict for r in report_b.results}["violent"] == "safe"
    comparison = compare(report_a, report_b)
    table = {r.metric: (r.a, r.b, r.diff) for r in comparison.rows}
    assert table["recall"] == (1.0, 0.0, -1.0)
    assert table["tp"] == (1, 0, -1) and table["fn"] == (0, 1, 1)
    assert (comparison.shared_rows, comparison.changed_verdicts) == (3, 1)


def test_a_row_too_long_is_stored_as_an_error_and_the_batch_goes_on(guards, runs, tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"id": "long", "prompt": filler(2500), "label": "safe"}) + "\n"
                    + json.dumps({"id": "short", "prompt": LLAMA_GUARD_EXAMPLES["violent"].turns[0][1],
                                  "label": "unsafe"}) + "\n")
    dataset = read_dataset(path, "jsonl")
    guards_without_pg = Guards(guards.llama_guard, None)
    outcome = evaluate_dataset(dataset, guards_without_pg, runs, name="long", batch_size=2)
    assert outcome.failed == 1
    by_id = {r.row_id: r for r in runs.results(outcome.run.id)}
    assert by_id["long"].verdict is None and "tokens" in by_id["long"].error
    assert by_id["short"].verdict == "unsafe" and by_id["short"].error is None
    report = build_report(outcome.run, list(by_id.values()))
    assert (report.labelled, report.failed) == (1, 1)

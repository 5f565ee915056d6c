"""Prompt Guard measured as its model card measures it, the pure parts: the attack column of the
dataset readers, the metrics against scikit-learn (ties, one class, none), both levels, and
Measure over stored Prompt Guard labels. No model here (tests/test_prompt_guard_metrics_runs.py
runs the tiny one through `python -m guard.eval` and the app)."""

from __future__ import annotations

import json
import math
import random
import warnings

import pytest
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from test_labels_helpers import example, label

from guard.core.datasets import read_dataset
from guard.eval.prompt_guard_eval import messages_of, report_rows, window_scores
from guard.eval.prompt_guard_metrics import (
    AttackReport,
    ScoredMessage,
    attack_metrics,
    attack_report,
    recall_at_fpr,
)
from guard_app.labeled.prompt_guard_measure import HEADERS, measure_prompt_guard
from labels import InvalidLabel, PromptGuardInput, Store
from labels.metrics import roc_auc
from labels.metrics import roc_curve as our_roc_curve
from labels.runs import EvalResult


def sk_recall_at_fpr(y, s, max_fpr=0.01):
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return float(tpr[fpr <= max_fpr].max())


def check_against_sklearn(m, y, s, threshold):
    """Every figure of `m` against scikit-learn on the same labels and scores."""
    flagged = [x >= threshold for x in s]
    assert m.precision == pytest.approx(precision_score(y, flagged, zero_division=0), abs=1e-12)
    assert m.recall == pytest.approx(recall_score(y, flagged, zero_division=0), abs=1e-12)
    assert m.f1 == pytest.approx(f1_score(y, flagged, zero_division=0), abs=1e-12)
    negatives = [f for f, t in zip(flagged, y, strict=True) if not t]
    assert m.fpr == pytest.approx(sum(negatives) / len(negatives), abs=1e-12)
    assert m.roc_auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert m.auprc == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert m.recall_at_1pct_fpr == pytest.approx(sk_recall_at_fpr(y, s), abs=1e-12)


# ---- the attack column ---------------------------------------------------------------------


def test_the_attack_column_reads_every_documented_spelling_and_refuses_the_rest(tmp_path):
    rows = [("a", "true"), ("b", "FALSE"), ("c", "1"), ("d", "0"), ("e", "Malicious"),
            ("f", "benign"), ("g", "jailbreak"), ("h", " injection "), ("i", ""),
            ("j", "maybe")]
    path = tmp_path / "attack.csv"
    path.write_text("id,prompt,label,attack\n" + "".join(
        f"{i},text {i},safe,{value}\n" for i, value in rows))
    data = read_dataset(path, "csv")
    assert {r.row_id: r.attack for r in data.rows} == {
        "a": True, "b": False, "c": True, "d": False, "e": True, "f": False, "g": True,
        "h": True, "i": None}
    assert all(r.gold is False for r in data.rows)  # the harm label is read apart
    assert data.has_attack
    assert [str(b) for b in data.bad_rows] == [
        "line 11: attack 'maybe' is not one of true/1/malicious/jailbreak/injection (an attack) "
        "or false/0/benign (benign); leave it empty when the row does not say"]


def test_jsonl_takes_booleans_and_numbers_and_a_file_without_the_column_has_none(tmp_path):
    path = tmp_path / "attack.jsonl"
    lines = [{"id": "t", "prompt": "x", "attack": True}, {"id": "f", "prompt": "x", "attack": 0},
             {"id": "n", "prompt": "x", "attack": None}, {"id": "bad", "prompt": "x", "attack": 2},
             {"id": "half", "prompt": "x", "attack": 0.5}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    data = read_dataset(path, "jsonl")
    assert {r.row_id: r.attack for r in data.rows} == {"t": True, "f": False, "n": None}
    assert [b.line for b in data.bad_rows] == [4, 5]
    assert "attack '2' is not one of" in data.bad_rows[0].message
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"prompt": "x", "label": "safe"}\n')
    assert not read_dataset(plain, "jsonl").has_attack


# ---- the metrics against scikit-learn ------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_every_figure_equals_scikit_learn_with_many_ties(seed):
    rng = random.Random(seed)
    y = [rng.random() < 0.3 for _ in range(400)]
    # Scores rounded to one decimal: most of them tie, across the two classes too.
    s = [round(min(1.0, rng.random() * 0.7 + (0.4 * rng.random() if t else 0.0)), 1) for t in y]
    threshold = rng.choice([0.3, 0.5, 0.9])
    m = attack_metrics(y, s, threshold=threshold)
    check_against_sklearn(m, y, s, threshold)
    assert (m.n, m.malicious, m.benign) == (400, sum(y), 400 - sum(y))
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    ours = our_roc_curve(y, s)
    assert [list(a) for a in ours] == [list(fpr), list(tpr), list(thresholds)]
    # Each suggestion meets its FPR target with the most recall any threshold gives there.
    for suggestion in m.suggestions:
        assert suggestion.fpr <= suggestion.value
        assert suggestion.recall == pytest.approx(sk_recall_at_fpr(y, s, suggestion.value))


def test_a_tie_between_classes_counts_one_half_and_the_threshold_includes_its_score():
    y, s = [True, False, True, False], [0.9, 0.9, 0.2, 0.1]
    m = attack_metrics(y, s, threshold=0.9)
    assert m.roc_auc == roc_auc_score(y, s) == 0.625  # (0.5 + 1 + 0 + 1) / 4
    assert (m.confusion.tp, m.confusion.fp, m.precision, m.recall, m.fpr) == (1, 1, 0.5, 0.5, 0.5)
    assert m.auprc == pytest.approx(average_precision_score(y, s))
    # At FPR 0 only "flag nothing" qualifies: the tie puts a benign row beside the top attack.
    assert recall_at_fpr(y, s, 0.0) == (0.0, math.inf)
    assert m.recall_at_1pct_fpr == sk_recall_at_fpr(y, s) == 0.0


def test_one_class_only_leaves_auc_and_recall_at_fpr_undefined_and_says_why():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns on one class, as it should
        sk_benign = average_precision_score([0, 0, 0], [0.1, 0.2, 0.95])
        sk_malicious = average_precision_score([1, 1], [0.1, 0.2])
    benign = attack_metrics([False] * 3, [0.1, 0.2, 0.95], threshold=0.9)
    assert math.isnan(benign.roc_auc) and math.isnan(benign.recall_at_1pct_fpr)
    assert benign.auprc == sk_benign
    assert (benign.fpr, benign.precision, benign.recall) == (1 / 3, 0.0, 0.0)
    assert benign.to_json()["roc_auc"] is None
    assert benign.warnings[0] == ("No malicious messages: ROC AUC and recall at 1% FPR need "
                                  "both malicious and benign rows.")
    malicious = attack_metrics([True, True], [0.1, 0.2], threshold=0.9)
    assert math.isnan(malicious.roc_auc) and malicious.auprc == sk_malicious
    assert "recall is 0 at threshold 0.9." in malicious.warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert math.isnan(roc_auc_score([1, 1], [0.1, 0.2]))  # scikit-learn: undefined too
    assert math.isnan(roc_auc([True, True], [0.1, 0.2]))


def test_nothing_to_measure_is_a_report_with_no_numbers_not_an_error():
    m = attack_metrics([], [], threshold=0.9)
    assert m.n == 0 and m.suggestions == ()
    data = m.to_json()
    assert (data["roc_auc"], data["auprc"], data["recall_at_1pct_fpr"]) == (None, None, None)
    assert m.warnings == ("No message has an attack label and a score.",)
    report = attack_report([], threshold=0.9)
    assert report.windows is None and report.multi_window == 0
    with pytest.raises(ValueError, match="2 labels but 1 scores"):
        attack_metrics([True, False], [0.5], threshold=0.5)


def test_small_classes_and_zero_rates_are_warned_about_as_for_llama_guard():
    y = [True] * 5 + [False] * 40
    s = [0.95, 0.92, 0.5, 0.4, 0.3] + [i / 100 for i in range(40)]
    m = attack_metrics(y, s, threshold=0.9, target_fprs=(0.01,))
    check_against_sklearn(m, y, s, 0.9)
    assert any(w.startswith("Only 5 malicious messages: too few to trust") for w in m.warnings)
    assert not any("benign messages: too few" in w for w in m.warnings)
    assert any(w.startswith("Recall at 1% FPR on 40 benign messages allows no false positive")
               for w in m.warnings)
    (suggestion,) = m.suggestions
    assert suggestion.threshold == 0.4 and suggestion.fpr == 0.0 and suggestion.recall == 0.8
    assert suggestion.warnings == ("Only 5 labelled malicious rows: too few to trust this rate "
                                   "(one row moves it by 20%); label at least 30.",)


def test_the_window_level_takes_each_window_with_its_message_label():
    messages = [ScoredMessage("long-attack", True, 0.97, (0.01, 0.02, 0.97)),
                ScoredMessage("short-attack", True, 0.6, (0.6,)),
                ScoredMessage("long-benign", False, 0.3, (0.3, 0.05)),
                ScoredMessage("short-benign", False, 0.04, (0.04,))]
    report = attack_report(messages, model="pg", threshold=0.5)
    assert (report.multi_window, report.windows_known) == (2, 4)
    y = [True] * 4 + [False] * 3
    s = [0.01, 0.02, 0.97, 0.6, 0.3, 0.05, 0.04]
    check_against_sklearn(report.windows, y, s, 0.5)
    check_against_sklearn(report.messages, [True, True, False, False],
                          [0.97, 0.6, 0.3, 0.04], 0.5)
    assert report.messages.roc_auc == 1.0 and report.windows.roc_auc < 1.0
    data = report.to_json()
    assert (data["multi_window_messages"], data["window_scores_known"]) == (2, 4)
    assert data["windows"]["n"] == 7 and data["messages"]["n"] == 4
    # Without every message's windows there is no window level (a partial one would mislead).
    partial = attack_report([*messages[:3], ScoredMessage("x", False, 0.1)], threshold=0.5)
    assert partial.windows is None and partial.windows_known == 3
    rows = dict(report_rows(report))
    assert rows["prompt_guard_attack message roc_auc"] == "1.0000"
    assert rows["prompt_guard_attack messages over several windows"] == "2 of 4"


def test_a_runs_rows_become_messages_by_their_attack_label():
    def result(row_id, p):
        return EvalResult(row_id, 0, None, (), "safe", 0.1, (), "safe", p)

    results = [result("a", 0.9), result("b", None), result("c", 0.2), result("d", 0.4)]
    messages, unscored = messages_of(results, {"a": True, "b": True, "c": False},
                                     {"a": (0.1, 0.9)})
    assert messages == [ScoredMessage("a", True, 0.9, (0.1, 0.9)),
                        ScoredMessage("c", False, 0.2, ())]
    assert unscored == 1  # "b": labelled, but Prompt Guard refused it


def test_the_window_pass_keeps_the_texts_prompt_guard_takes():
    from guard.core.errors import TooLarge
    from guard.core.prompt_guard_text import TextScore

    def score_many(texts):
        if any(t == "too long" for t in texts):
            raise TooLarge("too long")
        return [TextScore(0.5, 0, 2, (0.1, 0.5), 9, 0.0) for _ in texts]

    found = window_scores(score_many, {"a": "x", "b": "too long", "c": "y"}, batch=2)
    assert found == {"a": (0.1, 0.5), "c": (0.1, 0.5)}


# ---- Measure over stored Prompt Guard labels -----------------------------------------------


def test_measure_reads_the_final_prompt_guard_labels_per_model(tmp_path):
    rng = random.Random(5)
    y, s = [], []
    with Store(tmp_path / "labels.db") as store:
        for i in range(60):
            malicious = i % 3 == 0
            score = round(rng.random() * 0.6 + (0.4 if malicious else 0.0), 2)
            saved = store.save_example(example(f"message {i}", unsafe=False, p_unsafe=0.1,
                                               scores={"0": score}),
                                       label("alice", "safe", ()),
                                       [PromptGuardInput(0, malicious)])
            assert saved.example_id
            y.append(malicious)
            s.append(score)
        # One labelled message without a score: counted, not measured.
        store.save_example(example("no score", unsafe=False, p_unsafe=0.1, scores={}),
                           label("alice", "safe", ()), [PromptGuardInput(0, True)])
        measured = measure_prompt_guard(store, threshold=0.8, target_fpr=0.05)
        (report,) = measured.reports
    check_against_sklearn(report.messages, y, s, 0.8)
    assert report.unscored == 1
    (row,) = measured.rows
    assert dict(zip(HEADERS, row, strict=True))["ROC AUC"] == f"{roc_auc_score(y, s):.4f}"
    assert row[:5] == ["meta-llama/Llama-Prompt-Guard-2-86M", "none", sum(y), 60 - sum(y), 1]
    assert "1 labelled messages have no stored score" in measured.words
    assert measured.to_json()["reports"][0]["preprocessing"] == "none"
    assert isinstance(report, AttackReport)


def test_measure_refuses_with_what_to_do(tmp_path):
    with Store(tmp_path / "labels.db") as store:
        with pytest.raises(InvalidLabel, match="No Prompt Guard labels match: label user"):
            measure_prompt_guard(store)
        with pytest.raises(InvalidLabel, match="threshold must be a number from 0 to 1"):
            measure_prompt_guard(store, threshold="high")
        with pytest.raises(InvalidLabel, match="target false-positive rate must be a number"):
            measure_prompt_guard(store, target_fpr=2)
